//! EKS Pod Identity: the node's agent slow, failing, or refusing the pod's token. The agent
//! is a loopback stand-in that answers as aws/eks-pod-identity-agent does
//! (`testkit/src/pod_identity.rs`); the secret read goes to a loopback Secrets Manager that
//! checks it was signed with the agent's credentials.
//!
//! aws-config retries the container credentials endpoint itself (3 attempts, its own
//! back-off, a 5 s read timeout), the one place an SDK's retries are not switched off
//! (`aws_config::http_credential_provider` sets them whatever the loader says), and reports
//! a status it gave up on as a credentials error: README "What each failure looks like"
//! says what that means for exit codes and attempts, and these tests hold it.

use std::time::{Duration, Instant};

use testkit::faults::Provider;
use testkit::http::{Fault, Server};
use testkit::pod_identity::{ACCESS_KEY_ID, Agent, SECRET_ACCESS_KEY, SESSION_TOKEN};
use testkit::{Run, SENTINEL, Scratch};

struct Outcome {
    run: Run,
    took: Duration,
    /// Requests that reached the agent, refused ones included.
    agent: usize,
    /// Secret reads, each checked to be signed with the agent's credentials.
    reads: usize,
}

/// Runs the binary as a pod with EKS Pod Identity runs it, at trace level, and checks what
/// every case must hold: neither the agent's token nor its credentials nor the secret in
/// the output, and the secret published exactly when the run succeeded.
fn run(agent: &Agent, timeout: &str) -> Outcome {
    let secrets = Server::start(vec![Provider::Aws.ok()]);
    let out = Scratch::tmpfs("pod-identity");
    let started = Instant::now();
    let run = testkit::sidecar!()
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("AWS_CONTAINER_CREDENTIALS_FULL_URI", agent.full_uri())
        .env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", &agent.token_file)
        .env("AWS_ENDPOINT_URL", &secrets.url)
        .env("RUST_LOG", "trace")
        .arg("--output-dir")
        .arg(&out.path)
        .args(["--secret", "db=aws://db", "--timeout", timeout])
        .run();
    let took = started.elapsed();
    for never in [
        agent.token.as_str(),
        SECRET_ACCESS_KEY,
        SESSION_TOKEN,
        SENTINEL,
    ] {
        run.expect_no_leak(never.as_bytes());
    }
    let reads = secrets.requests();
    for read in &reads {
        let signature = read.header("authorization").unwrap_or_default();
        let credential = format!("Credential={ACCESS_KEY_ID}/");
        assert!(signature.contains(&credential), "not the agent's key");
    }
    match run.code {
        0 => assert_eq!(out.read("db"), SENTINEL.as_bytes()),
        _ => out.expect_empty(),
    }
    Outcome {
        run,
        took,
        agent: agent.requests().len(),
        reads: reads.len(),
    }
}

#[test]
fn the_agents_credentials_sign_the_read_and_its_token_is_never_printed() {
    let agent = Agent::start(vec![Agent::credentials()]);
    let outcome = run(&agent, "20s");
    outcome
        .run
        .expect_code(0)
        .expect_stderr("AWS identity loaded source=EcsContainer");
    assert_eq!((outcome.agent, outcome.reads), (1, 1));
    let sent = agent.requests()[0]
        .header("authorization")
        .map(str::to_owned);
    assert_eq!(sent.as_deref(), Some(agent.token.as_str()));
}

#[test]
fn an_agent_failing_then_answering_is_retried_to_success() {
    let agent = Agent::start(vec![
        Agent::eks_auth_error(500),
        Agent::eks_auth_error(503),
        Agent::credentials(),
    ]);
    let outcome = run(&agent, "20s");
    outcome.run.expect_code(0);
    assert_eq!((outcome.agent, outcome.reads), (3, 1));
}

#[test]
fn an_agent_failing_on_every_attempt_is_exit_3_after_three_requests() {
    let agent = Agent::start(vec![Agent::eks_auth_error(500)]);
    let outcome = run(&agent, "20s");
    // aws-config's three attempts, then a credentials error: exit 3, and not retried again
    // (which would make nine requests).
    outcome
        .run
        .expect_code(3)
        .expect_stderr("Non-success status from HTTP credential provider: StatusCode(500)");
    assert_eq!((outcome.agent, outcome.reads), (3, 0));
    assert!(outcome.took < Duration::from_secs(15), "{:?}", outcome.took);
}

#[test]
fn an_agent_that_never_answers_ends_the_run_at_the_deadline() {
    let agent = Agent::start(vec![
        Agent::credentials().fault(Fault::DelayHeaders(Duration::from_secs(60))),
    ]);
    let outcome = run(&agent, "8s");
    outcome.run.expect_code(5).expect_stderr("--timeout");
    // One attempt of ours fills the deadline; inside it aws-config gives up on the agent
    // after its 5 s read timeout and asks once more.
    assert!(
        (1..=2).contains(&outcome.agent),
        "{} requests",
        outcome.agent
    );
    assert_eq!(outcome.reads, 0);
    assert!(outcome.took < Duration::from_secs(12), "{:?}", outcome.took);
}

#[test]
fn a_token_the_agent_refuses_is_exit_3_after_one_request() {
    let agent = Agent::start(vec![Agent::credentials()]);
    // A token for another service account: EKS Auth refuses it, the agent passes that on.
    let other = testkit::fake_jwt("system:serviceaccount:default:other");
    std::fs::write(&agent.token_file, &other).unwrap();
    let outcome = run(&agent, "20s");
    outcome
        .run
        .expect_code(3)
        .expect_stderr("container credentials at")
        .expect_stderr("StatusCode(400)")
        .expect_no_leak(other.as_bytes());
    assert_eq!((outcome.agent, outcome.reads, agent.served()), (1, 0, 0));
}
