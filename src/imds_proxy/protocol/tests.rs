use http_body_util::BodyExt as _;

use super::*;

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.insert(*name, value.parse().unwrap());
    }
    map
}

fn body(reply: Reply) -> (u16, serde_json::Value) {
    let status = reply.status().as_u16();
    let bytes = futures_util::FutureExt::now_or_never(reply.into_body().collect())
        .unwrap()
        .unwrap()
        .to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

fn imds_route(query: &str, pairs: &[(&'static str, &str)]) -> Route {
    route(
        &Method::GET,
        "/metadata/identity/oauth2/token",
        Some(query),
        &headers(pairs),
        None,
    )
}

#[test]
fn identity_parameters_are_read_under_each_name_and_only_one_is_allowed() {
    let metadata = [("metadata", "true")];
    let cases = [
        ("client_id=C", Named::ClientId("C".into())),
        ("object_id=O", Named::ObjectId("O".into())),
        ("msi_res_id=R", Named::ResourceId("R".into())),
        ("mi_res_id=R", Named::ResourceId("R".into())),
        ("", Named::Default),
    ];
    for (extra, named) in cases {
        let query =
            format!("api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net&{extra}");
        match imds_route(&query, &metadata) {
            Route::Token(request) => {
                assert_eq!(request.named, named);
                assert_eq!(request.resource, "https://vault.azure.net");
                assert_eq!(request.contract, Contract::Imds);
            }
            other => panic!("{extra}: {other:?}"),
        }
    }
    let Route::Answer(answer) = imds_route(
        "api-version=2018-02-01&resource=r&client_id=C&object_id=O",
        &metadata,
    ) else {
        panic!("two identities accepted");
    };
    assert_eq!(body(answer).0, 400);
}

#[test]
fn the_token_path_matches_without_regard_to_case_and_nothing_else_is_served() {
    let pairs = [("metadata", "true")];
    for path in [
        "/METADATA/identity/oauth2/token",
        "/metadata/identity/oauth2/token/",
    ] {
        let route = route(
            &Method::GET,
            path,
            Some("api-version=2018-02-01&resource=r"),
            &headers(&pairs),
            None,
        );
        assert!(matches!(route, Route::Token(_)), "{path}");
    }
    let secret = SecretValue::from_string("s".repeat(32));
    for path in ["/metadata/instance", "/metadata/identity", "/msi/token"] {
        let route = route(
            &Method::GET,
            path,
            Some("api-version=2021-02-01"),
            &headers(&pairs),
            None,
        );
        let Route::NotServed(answer) = route else {
            panic!("{path}");
        };
        assert_eq!(body(answer).0, 404);
    }
    // With the App Service contract on, /msi/token is its.
    let route = route(
        &Method::GET,
        "/MSI/token",
        Some("api-version=2019-08-01&resource=r&principal_id=P"),
        &headers(&[("x-identity-header", &"s".repeat(32))]),
        Some(&secret),
    );
    let Route::Token(request) = route else {
        panic!("{route:?}");
    };
    assert_eq!(request.contract, Contract::AppService);
    assert_eq!(request.named, Named::ObjectId("P".into()));
}

#[test]
fn token_answers_carry_imds_fields_as_strings_and_escape_the_token() {
    let request = TokenRequest {
        contract: Contract::Imds,
        resource: "https://management.azure.com/".into(),
        named: Named::Default,
    };
    let expires = SystemTime::now() + Duration::from_secs(3000);
    let token = SecretValue::from_string("a\"b\\c".into());
    let (status, json) = body(super::token(&request, "client", &token, expires));
    assert_eq!(status, 200);
    assert_eq!(json["access_token"], "a\"b\\c");
    assert_eq!(json["resource"], "https://management.azure.com/");
    assert_eq!(json["token_type"], "Bearer");
    assert_eq!(json["client_id"], "client");
    let left: u64 = json["expires_in"].as_str().unwrap().parse().unwrap();
    assert!((2998..=3000).contains(&left), "{json}");
    assert!(json["expires_on"].as_str().unwrap().parse::<u64>().is_ok());

    let app_service = TokenRequest {
        contract: Contract::AppService,
        ..request
    };
    let (_, json) = body(super::token(&app_service, "client", &token, expires));
    assert!(json.get("expires_in").is_none(), "{json}");
    let (status, json) = body(error(
        Contract::AppService,
        StatusCode::BAD_REQUEST,
        "invalid_client",
        "AADSTS700213: no match",
    ));
    assert_eq!((status, json["statusCode"].as_u64()), (400, Some(400)));
    assert_eq!(json["message"], "invalid_client: AADSTS700213: no match");
}
