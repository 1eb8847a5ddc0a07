//! Certificates made at test time with the `openssl` command line: a root CA, an
//! intermediate CA and a leaf (`CN=app.example.com`, an RSA key) it issued, and the forms a
//! certificate is stored in: PEM bundles, and PKCS#12 files without a password, written
//! by OpenSSL (`-passout pass:`, modern PBES2/AES and legacy 3DES) and the way Azure Key
//! Vault writes them (the null password, `scripts/pkcs12_null_password.py`).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::Scratch;

/// A chain of two below a root, and its files.
pub struct Pki {
    pub dir: Scratch,
}

impl Pki {
    /// Generates the keys and certificates (about a second).
    pub fn generate() -> Pki {
        let dir = Scratch::disk("pki");
        let pki = Pki { dir };
        std::fs::write(
            pki.path("ext_ca"),
            "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n",
        )
        .unwrap();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        pki.openssl(
            &["req", "-x509"],
            &ec,
            &["-keyout", "root.key", "-out", "root.crt"],
            "/CN=Test Root CA",
        );
        pki.openssl(
            &["req"],
            &ec,
            &["-keyout", "inter.key", "-out", "inter.csr"],
            "/CN=Test Intermediate CA",
        );
        pki.sign("inter", "root", true);
        let rsa = ["-newkey", "rsa:2048", "-nodes"];
        pki.openssl(
            &["req"],
            &rsa,
            &["-keyout", "leaf.key", "-out", "leaf.csr"],
            "/CN=app.example.com",
        );
        pki.sign("leaf", "inter", false);
        pki
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path.join(name)
    }

    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }

    fn openssl(&self, command: &[&str], key: &[&str], files: &[&str], subject: &str) {
        let mut args: Vec<&str> = command.to_vec();
        args.extend(key);
        args.extend(files);
        args.extend(["-subj", subject]);
        if command.contains(&"-x509") {
            args.extend(["-days", "2", "-addext", "basicConstraints=critical,CA:TRUE"]);
        }
        run(&self.dir.path, "openssl", &args);
    }

    fn sign(&self, name: &str, issuer: &str, ca: bool) {
        let (csr, crt) = (format!("{name}.csr"), format!("{name}.crt"));
        let (issuer_crt, issuer_key) = (format!("{issuer}.crt"), format!("{issuer}.key"));
        let mut args = vec![
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &issuer_crt,
            "-CAkey",
            &issuer_key,
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "2",
        ];
        if ca {
            args.extend(["-extfile", "ext_ca"]);
        }
        run(&self.dir.path, "openssl", &args);
    }

    /// The PEM bundle Key Vault stores for `application/x-pem-file`: the key, the leaf,
    /// the intermediate.
    pub fn pem_bundle(&self) -> String {
        ["leaf.key", "leaf.crt", "inter.crt"]
            .iter()
            .map(|name| String::from_utf8(self.read(name)).unwrap())
            .collect()
    }

    /// A PKCS#12 file of the leaf's key and chain, without a password, written as
    /// `how` says.
    pub fn pkcs12(&self, how: Pkcs12) -> Vec<u8> {
        let out = format!("{how:?}.p12");
        let base = [
            "pkcs12",
            "-export",
            "-inkey",
            "leaf.key",
            "-in",
            "leaf.crt",
            "-certfile",
            "inter.crt",
            "-passout",
            "pass:",
            "-out",
            &out,
        ];
        match how {
            Pkcs12::OpenSslModern => run(&self.dir.path, "openssl", &base),
            Pkcs12::OpenSslLegacy => {
                let mut args = base.to_vec();
                args.extend([
                    "-keypbe",
                    "PBE-SHA1-3DES",
                    "-certpbe",
                    "PBE-SHA1-3DES",
                    "-macalg",
                    "sha1",
                ]);
                run(&self.dir.path, "openssl", &args)
            }
            Pkcs12::KeyVault => {
                let script =
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pkcs12_null_password.py");
                let script = script.to_str().unwrap();
                run(
                    &self.dir.path,
                    "python3",
                    &[script, "leaf.key", "leaf.crt", "inter.crt", &out],
                )
            }
            Pkcs12::Truststore => run(
                &self.dir.path,
                "openssl",
                &[
                    "pkcs12",
                    "-export",
                    "-nokeys",
                    "-in",
                    "inter.crt",
                    "-passout",
                    "pass:",
                    "-out",
                    &out,
                ],
            ),
        }
        self.read(&out)
    }

    /// What `openssl ARGS` prints for `input` (a file in this directory or written
    /// to one): the independent reading of what secret-sidecar published.
    pub fn openssl_says(&self, args: &[&str]) -> String {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir.path)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }
}

/// How a PKCS#12 file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pkcs12 {
    /// `openssl pkcs12 -export -passout pass:` (OpenSSL 3: PBES2 with AES-256, a SHA-256
    /// MAC; the empty password as two zero bytes).
    OpenSslModern,
    /// The same with 3DES and a SHA-1 MAC, as older tools write it.
    OpenSslLegacy,
    /// 3DES, keyed like the MAC with the null password, as Key Vault and .NET write it.
    KeyVault,
    /// Certificates only, no key: a truststore, not a certificate with its key.
    Truststore,
}

fn run(dir: &Path, program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|err| panic!("{program}: {err}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
