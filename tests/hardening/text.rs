//! Issue 14, low items: text from outside (a secret's member names, a reference's key)
//! cannot forge log lines or reach a terminal raw; and templates, which run on secret
//! values, are bounded in work and output and never print an operand.

use std::time::Duration;

use testkit::secretsmanager::SecretsManager;
use testkit::{Run, Scratch, Sidecar};

fn sidecar(store: &SecretsManager, out: &Scratch) -> Sidecar {
    store
        .configure(testkit::sidecar!())
        .arg("--output-dir")
        .arg(&out.path)
}

/// Every line of a text log is an event of its own: it starts with a timestamp.
#[track_caller]
fn one_line_per_event(run: &Run) {
    for line in run.stderr.lines() {
        let stamped = line.len() > 20 && line.as_bytes()[4] == b'-' && line.as_bytes()[10] == b'T';
        assert!(stamped, "a line that is no event of its own: {line:?}");
    }
}

/// A JSON secret whose member names hold a newline that would forge an ERROR line, an
/// escape sequence, or a right-to-left override disguising the name: refused as bad data,
/// nothing published, and no such character printed raw.
#[test]
fn member_names_with_control_characters_are_refused_and_never_printed_raw() {
    let store = SecretsManager::start();
    for name in [
        "ok\nERROR forged: all secrets published",
        "red\u{1b}[31malert",
        "invoice\u{202e}fdp.exe",
    ] {
        let json = serde_json::json!({"plain": "1", name: "2"}).to_string();
        store.put("members", json);
        let out = Scratch::tmpfs("control-names");
        let run = sidecar(&store, &out)
            .args(["--secret", "set=aws://members?format=explode"])
            .run();
        run.expect_code(7).expect_stderr("control character");
        out.expect_empty();
        one_line_per_event(&run);
        for raw in ['\u{1b}', '\u{202e}'] {
            assert!(
                !run.stderr.contains(raw),
                "{raw:?} printed raw:\n{}",
                run.stderr
            );
        }
    }
}

/// A reference's `#key` is text from the command line or a config file; with a newline in
/// it, the error that names the reference stays one line, in text (escaped) and in JSON
/// (where a parser reads the newline back).
#[test]
fn a_key_with_a_newline_reaches_the_error_line_escaped() {
    let store = SecretsManager::start();
    store.put("db", r#"{"user":"app"}"#);
    let out = Scratch::tmpfs("control-key");
    let reference = "x=aws://db#user\nERROR forged";

    let text = sidecar(&store, &out).args(["--secret", reference]).run();
    text.expect_code(7).expect_stderr("user\\u000aERROR forged");
    one_line_per_event(&text);

    let json = sidecar(&store, &out)
        .args(["--log-format", "json", "--secret", reference])
        .run();
    json.expect_code(7);
    let events: Vec<serde_json::Value> = json
        .stderr
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is one JSON event"))
        .collect();
    let error = events
        .iter()
        .find(|event| event["level"] == "ERROR")
        .expect("an error event");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("user\nERROR forged"), "{message:?}");
    out.expect_empty();
}

/// The binary rendering `template` over the JSON secret `db` into `out/rendered`.
fn render(store: &SecretsManager, out: &Scratch, config: &Scratch, template: &str) -> Sidecar {
    let file = config.path.join("template.yaml");
    let yaml = serde_json::json!({
        "files": [{
            "file": "rendered",
            "format": "template",
            "template": template,
            "values": {"db": "aws://db"},
        }]
    });
    std::fs::write(&file, yaml.to_string()).unwrap();
    sidecar(store, out).arg("--config").arg(file)
}

/// The store holding `db`, a JSON secret with a secret number, and a config directory.
fn template_fixture() -> (SecretsManager, Scratch) {
    let store = SecretsManager::start();
    store.put("db", format!(r#"{{"pin":{PIN},"name":"app"}}"#));
    (store, Scratch::disk("template-config"))
}

const PIN: &str = "918273645";
/// Long enough for any bounded template, short enough that a test of one that is not
/// bounded fails instead of hanging.
const LIMIT: Duration = Duration::from_secs(20);

/// A failed operation's detail quoted its operands: a division by zero printed the secret
/// number.
#[test]
fn a_failed_template_operation_never_prints_its_operands() {
    let (store, config) = template_fixture();
    let out = Scratch::tmpfs("template-division");
    let run = render(&store, &out, &config, "{{ db.pin // 0 }}").run_within(LIMIT);
    run.expect_code(7).expect_stderr("invalid operation");
    run.expect_no_leak(PIN.as_bytes());
    out.expect_empty();
}

/// A loop over a loop runs out of fuel (a million instructions) within a moment.
#[test]
fn a_runaway_template_runs_out_of_fuel() {
    let (store, config) = template_fixture();
    let out = Scratch::tmpfs("template-loop");
    let endless = "{% for a in range(100000) %}{% for b in range(100000) %}{{ db.name }}\
                   {% endfor %}{% endfor %}";
    render(&store, &out, &config, endless)
        .run_within(LIMIT)
        .expect_code(7)
        .expect_stderr("fuel");
    out.expect_empty();
}

/// Six megabytes of output, in few instructions: refused past 1 MiB.
#[test]
fn a_template_output_past_one_mebibyte_is_refused() {
    let (store, config) = template_fixture();
    let out = Scratch::tmpfs("template-huge");
    let huge = "{% for a in range(20000) %}{{ db.name * 100 }}{% endfor %}";
    render(&store, &out, &config, huge)
        .run_within(LIMIT)
        .expect_code(7)
        .expect_stderr("larger than 1048576 bytes");
    out.expect_empty();
}
