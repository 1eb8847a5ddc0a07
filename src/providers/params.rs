//! The `?name=value&flag` part of a reference, shared out between the core and the
//! provider that owns the scheme.
//!
//! Values are taken literally: no percent-decoding, because no provider allows `?`, `#`
//! or `&` in secret names and decoding would make `%` ambiguous.

use anyhow::{Result, bail};

/// The `?name=value&flag` part of a reference. Providers and the core each take the
/// parameters they understand; whatever is left over is an error, so a misspelt
/// parameter never silently does nothing.
#[derive(Debug, Default)]
pub struct Params(Vec<(String, Option<String>)>);

impl Params {
    pub fn parse(raw: &str) -> Result<Params> {
        let mut params = Vec::new();
        for pair in raw.split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = match pair.split_once('=') {
                Some((name, value)) => (name, Some(value.to_owned())),
                None => (pair, None),
            };
            if name.is_empty() {
                bail!("parameter with an empty name in '?{raw}'");
            }
            if params.iter().any(|(seen, _)| seen == name) {
                bail!("parameter '{name}' given twice");
            }
            params.push((name.to_owned(), value));
        }
        Ok(Params(params))
    }

    /// Removes and returns a parameter that must have a non-empty value.
    pub fn take_value(&mut self, name: &str) -> Result<Option<String>> {
        let Some(index) = self.0.iter().position(|(seen, _)| seen == name) else {
            return Ok(None);
        };
        match self.0.remove(index).1 {
            Some(value) if !value.is_empty() => Ok(Some(value)),
            _ => bail!("parameter '{name}' needs a value ({name}=...)"),
        }
    }

    /// Removes a yes/no parameter: bare `name` or `name=true` is yes, `name=false` no.
    pub fn take_flag(&mut self, name: &str) -> Result<Option<bool>> {
        let Some(index) = self.0.iter().position(|(seen, _)| seen == name) else {
            return Ok(None);
        };
        match self.0.remove(index).1.as_deref() {
            None | Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(other) => bail!("parameter '{name}' is true or false, not '{other}'"),
        }
    }

    /// Fails on the first parameter nobody took.
    pub fn reject_rest(&self) -> Result<()> {
        match self.0.first() {
            None => Ok(()),
            Some((name, _)) => bail!("unknown parameter '{name}'"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_parameter_is_taken_once_and_leftovers_are_errors() {
        let mut params = Params::parse("a=1&flag&b=false").unwrap();
        assert_eq!(params.take_value("a").unwrap().as_deref(), Some("1"));
        assert_eq!(params.take_value("a").unwrap(), None);
        assert_eq!(params.take_flag("flag").unwrap(), Some(true));
        assert_eq!(params.take_flag("b").unwrap(), Some(false));
        params.reject_rest().unwrap();

        let mut params = Params::parse("x&y=").unwrap();
        assert!(
            params.take_value("x").is_err(),
            "a value parameter without value"
        );
        assert!(params.reject_rest().is_err(), "y was left over");
        assert!(Params::parse("a=1&a=2").is_err());
        assert!(Params::parse("=1").is_err());
        assert!(Params::parse("f=maybe").unwrap().take_flag("f").is_err());
    }
}
