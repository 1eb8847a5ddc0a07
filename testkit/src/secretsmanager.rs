//! A Secrets Manager that speaks the service's JSON protocol on loopback and holds its
//! secrets in memory: `GetSecretValue` and `BatchGetSecretValue` (by `SecretIdList`), with
//! the service's `ResourceNotFoundException` for a name it does not hold. Unlike
//! LocalStack it can be made slow per batch call and counts how many batch calls were in
//! flight at once, can hold reads back until several clients are reading, and serves
//! values of any size, so the tests of concurrency and of the caps need no LocalStack.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::Sidecar;
use super::http::{Request, Response, Server};

const ACCOUNT: &str = "000000000000";

#[derive(Default)]
struct State {
    /// Each secret's current version as GetSecretValue answers it, made once on `put`
    /// (values may be megabytes).
    secrets: Mutex<BTreeMap<String, String>>,
    /// How long each BatchGetSecretValue call takes to answer.
    batch_delay: Duration,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    /// GetSecretValue calls are answered only once this many have arrived (or a few
    /// seconds have passed), so that clients get their values at the same moment.
    together: usize,
    arrived: Mutex<usize>,
    all_arrived: Condvar,
}

pub struct SecretsManager {
    pub server: Server,
    state: Arc<State>,
}

impl SecretsManager {
    pub fn start() -> SecretsManager {
        SecretsManager::with_batch_delay(Duration::ZERO)
    }

    /// Each BatchGetSecretValue call is answered after `delay`, so calls that overlap
    /// are seen to overlap.
    pub fn with_batch_delay(delay: Duration) -> SecretsManager {
        SecretsManager::serving(State {
            batch_delay: delay,
            ..State::default()
        })
    }

    /// Stores `value` as the current version of `name`.
    pub fn put(&self, name: &str, value: impl Into<String>) {
        let entry = entry(name, &value.into()).to_string();
        self.state
            .secrets
            .lock()
            .unwrap()
            .insert(name.to_owned(), entry);
    }

    /// Answers GetSecretValue only once `clients` such calls have arrived (at most 5
    /// seconds late), so that as many runs receive their values together.
    pub fn answering_together(clients: usize) -> SecretsManager {
        SecretsManager::serving(State {
            together: clients,
            ..State::default()
        })
    }

    fn serving(state: State) -> SecretsManager {
        let state = Arc::new(state);
        let shared = Arc::clone(&state);
        SecretsManager {
            server: Server::with_handler(move |request| answer(request, &shared)),
            state,
        }
    }

    /// `sidecar` sending its Secrets Manager requests here.
    pub fn configure(&self, sidecar: Sidecar) -> Sidecar {
        sidecar.env("AWS_ENDPOINT_URL", &self.server.url)
    }

    /// How many requests named `operation` (`GetSecretValue`, `BatchGetSecretValue`).
    pub fn calls(&self, operation: &str) -> usize {
        let target = format!("secretsmanager.{operation}");
        self.server
            .requests()
            .iter()
            .filter(|r| r.header("x-amz-target") == Some(target.as_str()))
            .count()
    }

    /// The most BatchGetSecretValue calls that were being answered at the same time.
    pub fn most_batch_calls_at_once(&self) -> usize {
        self.state.most_in_flight.load(Ordering::SeqCst)
    }
}

fn answer(request: &Request, state: &State) -> Response {
    let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap_or_default();
    match request.header("x-amz-target") {
        Some("secretsmanager.GetSecretValue") => {
            wait_for_the_others(state);
            let id = body["SecretId"].as_str().unwrap_or_default();
            match state.secrets.lock().unwrap().get(id) {
                Some(entry) => Response::json(200, entry.clone()),
                None => not_found(),
            }
        }
        Some("secretsmanager.BatchGetSecretValue") => {
            let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            state.most_in_flight.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(state.batch_delay);
            let (mut values, mut errors): (Vec<serde_json::Value>, _) = (Vec::new(), Vec::new());
            let ids = body["SecretIdList"].as_array().cloned().unwrap_or_default();
            for id in ids.iter().filter_map(|id| id.as_str()) {
                match state.secrets.lock().unwrap().get(id) {
                    Some(entry) => values.push(serde_json::from_str(entry).unwrap()),
                    None => errors.push(serde_json::json!({
                        "SecretId": id,
                        "ErrorCode": "ResourceNotFoundException",
                        "Message": "Secrets Manager can't find the specified secret.",
                    })),
                }
            }
            state.in_flight.fetch_sub(1, Ordering::SeqCst);
            let answer = serde_json::json!({"SecretValues": values, "Errors": errors});
            Response::json(200, answer.to_string())
        }
        _ => error(
            "UnknownOperationException",
            "the fake serves GetSecretValue and BatchGetSecretValue",
        ),
    }
}

fn wait_for_the_others(state: &State) {
    let mut arrived = state.arrived.lock().unwrap();
    *arrived += 1;
    state.all_arrived.notify_all();
    let _ = state
        .all_arrived
        .wait_timeout_while(arrived, Duration::from_secs(5), |arrived| {
            *arrived < state.together
        });
}

/// One secret's current version, as GetSecretValue answers it and BatchGetSecretValue
/// lists it.
fn entry(name: &str, value: &str) -> serde_json::Value {
    serde_json::json!({
        "ARN": format!("arn:aws:secretsmanager:{}:{ACCOUNT}:secret:{name}-AbCdEf", super::REGION),
        "Name": name,
        "VersionId": "3a9e1c0d-7b2f-4e5a-9c8d-1f2e3d4c5b6a",
        "SecretString": value,
        "VersionStages": ["AWSCURRENT"],
        "CreatedDate": 1.7e9,
    })
}

fn not_found() -> Response {
    error(
        "ResourceNotFoundException",
        "Secrets Manager can't find the specified secret.",
    )
}

fn error(code: &str, message: &str) -> Response {
    Response::json(
        400,
        serde_json::json!({"__type": code, "Message": message}).to_string(),
    )
    .header("x-amzn-errortype", code)
}
