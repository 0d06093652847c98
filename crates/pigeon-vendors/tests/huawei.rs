//! The Huawei Push Kit client against the local fake: client-credentials token cached and
//! fetched again when Push Kit says it expired, the message as Push Kit wants it, and a
//! batch's answer split per token (illegal tokens dead, traffic control retried).

use pigeon_vendors::fake_huawei::FakeHuawei;
use pigeon_vendors::huawei::{HuaweiClient, HuaweiConfig};
use pigeon_vendors::Outcome;
use serde_json::json;
use std::sync::atomic::Ordering;

fn ids(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn message() -> serde_json::Value {
    json!({"android": {"ttl": "86400s", "collapse_key": -1, "notification": {
        "title": "Goal", "body": "2:1", "notify_id": 7, "click_action": {"type": 3},
        "badge": {"add_num": 1, "class": "com.example.app.Main"}}},
        "data": "{\"msg_id\":\"7\"}"})
}

async fn setup() -> (FakeHuawei, HuaweiConfig) {
    let fake = FakeHuawei::start("10086", "10086", "hw-secret")
        .await
        .unwrap();
    let config = HuaweiConfig {
        app_id: "10086".into(),
        client_id: "10086".into(),
        client_secret: "hw-secret".into(),
        auth_url: Some(fake.auth_url.clone()),
        base_url: Some(fake.base_url.clone()),
        allow_private_networks: true,
    };
    (fake, config)
}

#[tokio::test]
async fn a_batch_is_sent_and_each_token_told_apart() {
    let (fake, config) = setup().await;
    let client = HuaweiClient::new(config.clone()).unwrap();
    let out = client.send(&ids(&["t1", "t2"]), &message()).await;
    assert!(out.iter().all(|(_, o)| matches!(o, Outcome::Sent { .. })));
    let sent = fake.received.lock()[0].clone();
    assert_eq!(sent["token"], json!(["t1", "t2"]));
    assert_eq!(sent["android"]["notification"]["notify_id"], 7);
    let out = client.send(&ids(&["t1", "dead2"]), &message()).await;
    assert!(matches!(out[0].1, Outcome::Sent { .. }));
    assert!(matches!(out[1].1, Outcome::DeadToken { .. }));
    let out = client.send(&ids(&["dead1", "dead2"]), &message()).await;
    assert!(out.iter().all(
        |(_, o)| matches!(o, Outcome::DeadToken { reason } if reason.starts_with("80300007"))
    ));
    assert!(matches!(
        client.send(&ids(&["busy1"]), &message()).await[0].1,
        Outcome::Retry { .. }
    ));
    assert!(matches!(
        client.send(&ids(&["oops1"]), &message()).await[0].1,
        Outcome::Retry { .. }
    ));
    let bad_ttl = json!({"android": {"ttl": "a day"}});
    assert!(
        matches!(&client.send(&ids(&["t1"]), &bad_ttl).await[0].1, Outcome::Rejected { reason, .. } if reason.starts_with("80100004"))
    );
    assert_eq!(
        fake.tokens_issued.load(Ordering::Relaxed),
        1,
        "one access token for all of that"
    );

    // Push Kit says the access token expired: fetched again, sent once more.
    fake.expire_access_tokens();
    assert!(matches!(
        client.send(&ids(&["t3"]), &message()).await[0].1,
        Outcome::Sent { .. }
    ));
    assert_eq!(fake.tokens_issued.load(Ordering::Relaxed), 2);

    // Wrong credentials: the token endpoint refuses; nothing is sent, and it may be retried.
    let wrong = HuaweiClient::new(HuaweiConfig {
        client_secret: "nope".into(),
        ..config
    })
    .unwrap();
    assert!(
        matches!(&wrong.send(&ids(&["t1"]), &message()).await[0].1, Outcome::Retry { reason, .. } if reason.contains("token endpoint"))
    );
}

/// A recall: Push Kit's `messages:revoke` with the notify id the notification was sent with.
#[tokio::test]
async fn a_recall_names_the_notify_id_and_tokens() {
    let (fake, config) = setup().await;
    let client = HuaweiClient::new(config).unwrap();
    assert!(matches!(
        client.revoke(7, &ids(&["t1", "t2"])).await,
        Outcome::Sent { .. }
    ));
    assert_eq!(fake.revoked.lock()[0], (7, ids(&["t1", "t2"])));
    fake.expire_access_tokens();
    assert!(matches!(
        client.revoke(8, &ids(&["t3"])).await,
        Outcome::Sent { .. }
    ));
    assert!(matches!(
        client.revoke(8, &[]).await,
        Outcome::Rejected { .. }
    ));
    assert_eq!(fake.revoked.lock().len(), 2);
}
