//! The Honor Push client against the local fake: client-credentials token cached and
//! fetched again when refused, the camelCase message with its tokens and `timestamp`
//! header, and a batch's answer split per token (expired tokens dead, failed tokens not
//! taken, flow control retried), whichever success code the service uses.

use pigeon_vendors::fake_honor::FakeHonor;
use pigeon_vendors::honor::{HonorClient, HonorConfig};
use pigeon_vendors::Outcome;
use serde_json::json;
use std::sync::atomic::Ordering;

fn ids(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn message() -> serde_json::Value {
    json!({"data": "{\"msg_id\":\"9\"}", "android": {"ttl": "86400s", "notification": {
        "title": "Goal", "body": "2:1", "notifyId": 9, "clickAction": {"type": 3},
        "badge": {"setNum": 2, "badgeClass": "com.example.app.Main"}}}})
}

#[tokio::test]
async fn a_batch_is_sent_and_each_token_told_apart() {
    let fake = FakeHonor::start("104400", "client-1", "honor-secret")
        .await
        .unwrap();
    let config = HonorConfig {
        app_id: "104400".into(),
        client_id: "client-1".into(),
        client_secret: "honor-secret".into(),
        auth_url: Some(fake.auth_url.clone()),
        base_url: Some(fake.base_url.clone()),
        allow_private_networks: true,
    };
    let client = HonorClient::new(config.clone()).unwrap();
    let out = client.send(&ids(&["t1", "t2"]), &message()).await;
    assert!(
        out.iter().all(|(_, o)| matches!(o, Outcome::Sent { .. })),
        "{out:?}"
    );
    let sent = fake.received.lock()[0].clone();
    assert_eq!(sent["token"], json!(["t1", "t2"]));
    assert_eq!(sent["android"]["notification"]["notifyId"], 9);

    let out = client
        .send(&ids(&["t1", "dead2", "fail3"]), &message())
        .await;
    assert!(matches!(out[0].1, Outcome::Sent { .. }));
    assert!(matches!(out[1].1, Outcome::DeadToken { .. }));
    assert!(matches!(out[2].1, Outcome::Rejected { .. }));
    // All dead: nothing taken, each token dead.
    let out = client.send(&ids(&["dead1", "dead2"]), &message()).await;
    assert!(out
        .iter()
        .all(|(_, o)| matches!(o, Outcome::DeadToken { .. })));
    assert!(matches!(
        client.send(&ids(&["busy1"]), &message()).await[0].1,
        Outcome::Retry { .. }
    ));
    // A message without a title: refused for good with Honor's reason.
    let bad = json!({"android": {"notification": {"body": "x"}}});
    assert!(
        matches!(&client.send(&ids(&["t1"]), &bad).await[0].1, Outcome::Rejected { reason, .. } if reason.starts_with("80100001"))
    );
    // The other success code third-party clients read.
    fake.set_success_code(0);
    assert!(matches!(
        client.send(&ids(&["t4"]), &message()).await[0].1,
        Outcome::Sent { .. }
    ));
    assert_eq!(fake.tokens_issued.load(Ordering::Relaxed), 1);

    // Honor refuses the access token: fetched again, sent once more.
    fake.expire_access_tokens();
    assert!(matches!(
        client.send(&ids(&["t3"]), &message()).await[0].1,
        Outcome::Sent { .. }
    ));
    assert_eq!(fake.tokens_issued.load(Ordering::Relaxed), 2);

    // Wrong credentials: nothing is sent, and it may be retried.
    let wrong = HonorClient::new(HonorConfig {
        client_secret: "nope".into(),
        ..config
    })
    .unwrap();
    assert!(
        matches!(&wrong.send(&ids(&["t1"]), &message()).await[0].1, Outcome::Retry { reason, .. } if reason.contains("token endpoint"))
    );
    // Too many tokens for one request.
    let many: Vec<String> = (0..1001).map(|i| format!("t{i}")).collect();
    assert!(matches!(
        client.send(&many, &message()).await[0].1,
        Outcome::Rejected { .. }
    ));
}
