//! The FCM client against the local fake: the service account's assertion exchanged for an
//! access token (checked as Google checks it), cached, fetched again when FCM answers 401;
//! every kind of send answer told apart.

use pigeon_vendors::fake_fcm::{FakeFcm, Project};
use pigeon_vendors::fcm::{FcmClient, FcmConfig};
use pigeon_vendors::Outcome;
use rsa::pkcs8::DecodePrivateKey;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// A 2048-bit RSA key made for these tests only (`openssl genpkey`).
const KEY: &str = include_str!("fixtures/fcm-test-key.pem");

async fn fake_and_config() -> (FakeFcm, FcmConfig) {
    let private = rsa::RsaPrivateKey::from_pkcs8_pem(KEY).unwrap();
    let fake = FakeFcm::start(Project {
        project_id: "demo-project".into(),
        client_email: "pigeon@demo-project.iam.gserviceaccount.com".into(),
        public_key: rsa::RsaPublicKey::from(&private),
    })
    .await
    .unwrap();
    let config = FcmConfig::from_service_account(&json!({
        "type": "service_account", "project_id": "demo-project", "private_key_id": "k1",
        "private_key": KEY, "client_email": "pigeon@demo-project.iam.gserviceaccount.com",
        "token_uri": fake.token_uri, "base_url": fake.base_url,
    }))
    .unwrap();
    (fake, config)
}

fn message() -> serde_json::Value {
    json!({"notification": {"title": "Hi", "body": "there"}, "data": {"msg_id": "7"},
           "android": {"ttl": "86400s", "priority": "HIGH", "notification": {"tag": "7"}}})
}

#[tokio::test]
async fn a_message_is_sent_with_one_access_token_reused() {
    let (fake, config) = fake_and_config().await;
    let client = FcmClient::new(config).unwrap();
    for token in ["tokA", "tokB", "tokC"] {
        assert!(
            matches!(client.send(token, &message()).await, Outcome::Sent { id } if id.starts_with("projects/demo-project/messages/"))
        );
    }
    assert_eq!(fake.stats.tokens_issued.load(Ordering::Relaxed), 1);
    let received = fake.stats.received.lock().clone();
    assert_eq!(received.len(), 3);
    assert_eq!(received[0]["token"], "tokA");
    assert_eq!(
        received[0]["notification"],
        json!({"title": "Hi", "body": "there"})
    );
    assert_eq!(received[0]["android"]["ttl"], "86400s");
}

#[tokio::test]
async fn an_expired_access_token_is_fetched_again_and_the_message_sent_once_more() {
    let (fake, config) = fake_and_config().await;
    let client = FcmClient::new(config).unwrap();
    assert!(matches!(
        client.send("tok1", &message()).await,
        Outcome::Sent { .. }
    ));
    fake.expire_access_tokens();
    assert!(matches!(
        client.send("tok2", &message()).await,
        Outcome::Sent { .. }
    ));
    assert_eq!(fake.stats.tokens_issued.load(Ordering::Relaxed), 2);
    assert_eq!(fake.stats.received.lock().len(), 2);
}

#[tokio::test]
async fn every_kind_of_answer_is_told_apart() {
    let (fake, config) = fake_and_config().await;
    let client = FcmClient::new(config.clone()).unwrap();
    let m = message();
    assert!(
        matches!(client.send("dead1", &m).await, Outcome::DeadToken { reason } if reason.starts_with("UNREGISTERED"))
    );
    assert!(
        matches!(client.send("bad1", &m).await, Outcome::DeadToken { reason } if reason.starts_with("INVALID_ARGUMENT"))
    );
    assert!(matches!(client.send("busy1", &m).await,
        Outcome::Retry { after: Some(d), reason } if d == Duration::from_secs(3) && reason.starts_with("QUOTA_EXCEEDED")));
    assert!(matches!(
        client.send("down1", &m).await,
        Outcome::Retry { after: None, .. }
    ));
    assert!(
        matches!(client.send("html1", &m).await, Outcome::Retry { reason, .. } if reason.contains("502"))
    );
    // A bad message (not the token) is refused for good, and the token is not blamed.
    let bad_ttl = json!({"android": {"ttl": "one day"}});
    assert!(matches!(
        client.send("tok1", &bad_ttl).await,
        Outcome::Rejected { status: 400, .. }
    ));
    // Another project's key: the token endpoint refuses the assertion.
    let other = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 1024).unwrap();
    let other_pem = rsa::pkcs8::EncodePrivateKey::to_pkcs8_pem(&other, Default::default()).unwrap();
    let wrong = FcmClient::new(FcmConfig {
        private_key_pem: other_pem.to_string(),
        ..config.clone()
    })
    .unwrap();
    assert!(
        matches!(wrong.send("tok1", &m).await, Outcome::Retry { reason, .. } if reason.contains("Invalid JWT Signature"))
    );
    assert_eq!(fake.stats.assertions_refused.load(Ordering::Relaxed), 1);
    // Another project id: FCM says the sender does not match.
    let mismatch = FcmClient::new(FcmConfig {
        project_id: "other-project".into(),
        ..config
    })
    .unwrap();
    assert!(
        matches!(mismatch.send("tok1", &m).await, Outcome::DeadToken { reason } if reason.starts_with("SENDER_ID_MISMATCH"))
    );
    // A key file without its fields, and a key that is not a key.
    assert!(FcmConfig::from_service_account(&json!({"project_id": "p"})).is_err());
    assert!(FcmClient::new(config_with_a_bad_key()).is_err());
}

fn config_with_a_bad_key() -> FcmConfig {
    FcmConfig {
        project_id: "p".into(),
        client_email: "e".into(),
        private_key_pem: "not a key".into(),
        private_key_id: None,
        token_uri: "http://127.0.0.1:9/token".into(),
        base_url: None,
        allow_private_networks: false,
    }
}
