//! The APNs client against the local fake, over real HTTP/2 and TLS with a test CA: headers,
//! payload and token auth as APNs checks them, every kind of answer, a provider token renewed
//! when APNs calls it expired, and many notifications multiplexed over one connection.

use p256::pkcs8::EncodePrivateKey;
use pigeon_vendors::apns::{ApnsAuth, ApnsClient, ApnsConfig, Notification};
use pigeon_vendors::fake_apns::{Account, FakeApns};
use pigeon_vendors::Outcome;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn key() -> (String, p256::ecdsa::VerifyingKey) {
    let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let pem = secret.to_pkcs8_pem(Default::default()).unwrap().to_string();
    let verifying = p256::ecdsa::VerifyingKey::from(secret.public_key());
    (pem, verifying)
}

async fn fake_and_client(record: bool) -> (FakeApns, ApnsClient, String) {
    let (pem, verifying) = key();
    let account = Account {
        key: verifying,
        key_id: "KEY1234567".into(),
        team_id: "TEAM123456".into(),
        topic: "com.example.app".into(),
    };
    let fake = FakeApns::start(account, record).await.unwrap();
    let client = ApnsClient::new(config(&fake, &pem, "com.example.app")).unwrap();
    (fake, client, pem)
}

fn config(fake: &FakeApns, pem: &str, topic: &str) -> ApnsConfig {
    ApnsConfig {
        auth: ApnsAuth::Token {
            key_id: "KEY1234567".into(),
            team_id: "TEAM123456".into(),
            private_key_pem: pem.into(),
        },
        topic: topic.into(),
        production: false,
        base_url: Some(fake.base_url.clone()),
        allow_private_networks: true,
        extra_root_pem: Some(fake.ca_pem.clone()),
    }
}

#[tokio::test]
async fn a_notification_arrives_with_the_headers_and_payload_apns_wants() {
    let (fake, client, _) = fake_and_client(true).await;
    let mut n = Notification::alert(Some("Hi"), "there", Some(3), &json!({"order": 7}));
    n.collapse_id = Some("score".into());
    n.expiration = Some(1_900_000_000);
    n.id = Some("123e4567-e89b-12d3-a456-426614174000".into());
    let outcome = client.send("a1b2c3d4", &n).await;
    assert_eq!(
        outcome,
        Outcome::Sent {
            id: "123e4567-e89b-12d3-a456-426614174000".into()
        }
    );
    let received = fake.stats.received.lock().clone();
    assert_eq!(received.len(), 1);
    let r = &received[0];
    assert_eq!(r.device_token, "a1b2c3d4");
    let header = |name: &str| {
        r.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(header("apns-topic"), Some("com.example.app"));
    assert_eq!(header("apns-push-type"), Some("alert"));
    assert_eq!(header("apns-priority"), Some("10"));
    assert_eq!(header("apns-collapse-id"), Some("score"));
    assert_eq!(header("apns-expiration"), Some("1900000000"));
    assert!(header("authorization").is_some_and(|a| a.starts_with("bearer ")));
    assert_eq!(
        r.payload,
        json!({"aps": {"alert": {"title": "Hi", "body": "there"}, "badge": 3, "sound": "default"}, "order": 7})
    );
}

#[tokio::test]
async fn every_kind_of_answer_is_told_apart() {
    let (_fake, client, pem) = fake_and_client(false).await;
    let n = Notification::alert(None, "x", None, &json!({}));
    assert_eq!(
        client.send("deadbeef", &n).await,
        Outcome::DeadToken {
            reason: "Unregistered".into()
        }
    );
    assert_eq!(
        client.send("bad0", &n).await,
        Outcome::DeadToken {
            reason: "BadDeviceToken".into()
        }
    );
    assert_eq!(
        client.send("busy1", &n).await,
        Outcome::Retry {
            after: Some(Duration::from_secs(2)),
            reason: "TooManyRequests".into()
        }
    );
    assert_eq!(
        client.send("down1", &n).await,
        Outcome::Retry {
            after: None,
            reason: "ServiceUnavailable".into()
        }
    );
    let mut big = n.clone();
    big.payload["pad"] = json!("x".repeat(5000));
    assert!(matches!(
        client.send("ok1", &big).await,
        Outcome::Rejected { status: 413, .. }
    ));
    let mut bad_collapse = n.clone();
    bad_collapse.collapse_id = Some("c".repeat(65));
    assert_eq!(
        client.send("ok1", &bad_collapse).await,
        Outcome::Rejected {
            status: 400,
            reason: "BadCollapseId".into()
        }
    );
    // Another app's topic, and a key APNs does not know.
    let fake = &_fake;
    let other_topic = ApnsClient::new(config(fake, &pem, "com.other")).unwrap();
    assert_eq!(
        other_topic.send("ok1", &n).await,
        Outcome::Rejected {
            status: 400,
            reason: "TopicDisallowed".into()
        }
    );
    let (wrong_pem, _) = key();
    let wrong_key = ApnsClient::new(config(fake, &wrong_pem, "com.example.app")).unwrap();
    assert_eq!(
        wrong_key.send("ok1", &n).await,
        Outcome::Rejected {
            status: 403,
            reason: "InvalidProviderToken".into()
        }
    );
}

#[tokio::test]
async fn an_expired_provider_token_is_renewed_and_the_notification_sent_again() {
    let (fake, client, _) = fake_and_client(false).await;
    let n = Notification::alert(None, "x", None, &json!({}));
    assert!(matches!(client.send("ok1", &n).await, Outcome::Sent { .. }));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    fake.expire_tokens_before.store(now + 1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(matches!(client.send("ok2", &n).await, Outcome::Sent { .. }));
    assert_eq!(fake.stats.provider_tokens.lock().len(), 2);
    assert_eq!(fake.stats.accepted.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn many_notifications_share_one_connection() {
    let (fake, client, _) = fake_and_client(false).await;
    let n = Notification::alert(None, "x", None, &json!({}));
    let sends = (0..500).map(|i| {
        let (client, n) = (&client, &n);
        async move { client.send(&format!("tok{i}"), n).await }
    });
    let outcomes = futures_util::future::join_all(sends).await;
    assert!(outcomes.iter().all(|o| matches!(o, Outcome::Sent { .. })));
    assert_eq!(fake.stats.accepted.load(Ordering::Relaxed), 500);
    assert_eq!(fake.stats.connections.load(Ordering::Relaxed), 1);
}

/// Certificate-based auth: the client shows the app's certificate in the TLS handshake and
/// sends no provider token; a client without it does not get through.
#[tokio::test]
async fn certificate_auth_shows_the_apps_certificate_instead_of_a_token() {
    let (fake, identity) = FakeApns::start_certificate("com.example.cert", true)
        .await
        .unwrap();
    let with_cert = ApnsConfig {
        auth: ApnsAuth::Certificate {
            certificate_pem: identity.certificate_pem.clone(),
            private_key_pem: identity.private_key_pem.clone(),
        },
        topic: "com.example.cert".into(),
        production: false,
        base_url: Some(fake.base_url.clone()),
        allow_private_networks: true,
        extra_root_pem: Some(fake.ca_pem.clone()),
    };
    let client = ApnsClient::new(with_cert.clone()).unwrap();
    let n = Notification::alert(Some("Hi"), "by certificate", Some(3), &json!({}));
    assert!(matches!(
        client.send("c0ffee", &n).await,
        Outcome::Sent { .. }
    ));
    let got = fake.stats.received.lock()[0].clone();
    assert_eq!(got.payload["aps"]["alert"]["body"], "by certificate");
    assert!(
        !got.headers.iter().any(|(k, _)| k == "authorization"),
        "no provider token with a certificate"
    );
    assert!(matches!(
        client.send("dead01", &n).await,
        Outcome::DeadToken { .. }
    ));

    // Without the certificate, the handshake fails: nothing is taken.
    let (pem, _) = key();
    let without = ApnsClient::new(ApnsConfig {
        auth: ApnsAuth::Token {
            key_id: "KEY1234567".into(),
            team_id: "TEAM123456".into(),
            private_key_pem: pem,
        },
        ..with_cert.clone()
    })
    .unwrap();
    assert!(matches!(
        without.send("c0ffee", &n).await,
        Outcome::Retry { .. }
    ));
    assert_eq!(fake.stats.accepted.load(Ordering::Relaxed), 1);

    // A certificate that is not one is refused when the client is made.
    let broken = ApnsClient::new(ApnsConfig {
        auth: ApnsAuth::Certificate {
            certificate_pem: "not a certificate".into(),
            private_key_pem: "nor a key".into(),
        },
        ..with_cert
    });
    assert!(broken.is_err());
}
