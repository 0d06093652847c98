//! The OPPO, vivo and Meizu clients against their local fakes: each vendor's signature
//! scheme checked, the message as the vendor wants it, and every kind of answer told apart.

use pigeon_vendors::fake_cn::{Accounts, FakeCn};
use pigeon_vendors::meizu::{MeizuClient, MeizuConfig};
use pigeon_vendors::oppo::{OppoClient, OppoConfig};
use pigeon_vendors::vivo::{VivoClient, VivoConfig};
use pigeon_vendors::Outcome;
use serde_json::json;

fn accounts() -> Accounts {
    Accounts {
        oppo_app_key: "oppo-key".into(),
        oppo_master_secret: "oppo-master".into(),
        vivo_app_id: "10001".into(),
        vivo_app_key: "vivo-key".into(),
        vivo_app_secret: "vivo-secret".into(),
        meizu_app_id: "110001".into(),
        meizu_app_secret: "meizu-secret".into(),
    }
}

#[tokio::test]
async fn oppo_signs_its_auth_sends_and_renews_a_refused_token() {
    let fake = FakeCn::start(accounts()).await.unwrap();
    let config = OppoConfig {
        app_key: "oppo-key".into(),
        master_secret: "oppo-master".into(),
        base_url: Some(fake.base_url.clone()),
        allow_private_networks: true,
    };
    let client = OppoClient::new(config.clone()).unwrap();
    let n = json!({"title": "Goal", "content": "2:1", "notify_id": 7, "off_line_ttl": 3600, "channel_id": "sports"});
    assert!(matches!(client.send("CN_r1", &n).await, Outcome::Sent { id } if id == "oppo-1"));
    assert_eq!(fake.received.lock()[0].1["notification"]["notify_id"], 7);
    assert!(matches!(
        client.send("dead1", &n).await,
        Outcome::DeadToken { .. }
    ));
    assert!(matches!(
        client.send("busy1", &n).await,
        Outcome::Retry { .. }
    ));
    assert!(matches!(
        client
            .send("r2", &json!({"title": "", "content": "x"}))
            .await,
        Outcome::Rejected { .. }
    ));
    fake.expire_tokens();
    assert!(
        matches!(client.send("r3", &n).await, Outcome::Sent { .. }),
        "a refused token is renewed"
    );
    let wrong = OppoClient::new(OppoConfig {
        master_secret: "nope".into(),
        ..config
    })
    .unwrap();
    assert!(
        matches!(wrong.send("r1", &n).await, Outcome::Retry { reason, .. } if reason.contains("Invalid Sign"))
    );
}

#[tokio::test]
async fn vivo_signs_its_auth_and_tells_dead_users_apart() {
    let fake = FakeCn::start(accounts()).await.unwrap();
    let config = VivoConfig {
        app_id: "10001".into(),
        app_key: "vivo-key".into(),
        app_secret: "vivo-secret".into(),
        base_url: Some(fake.base_url.clone()),
        allow_private_networks: true,
    };
    let client = VivoClient::new(config.clone()).unwrap();
    let m = json!({"notifyType": 4, "title": "Goal", "content": "2:1", "timeToLive": 3600, "skipType": 1, "classification": 1});
    assert!(matches!(client.send("r1", &m).await, Outcome::Sent { .. }));
    let sent = fake.received.lock()[0].1.clone();
    assert_eq!(
        (sent["regId"].clone(), sent["timeToLive"].clone()),
        (json!("r1"), json!(3600))
    );
    assert!(sent["requestId"].as_str().is_some_and(|r| r.len() <= 64));
    assert!(matches!(
        client.send("dead1", &m).await,
        Outcome::DeadToken { .. }
    ));
    assert!(
        matches!(client.send("gone1", &m).await, Outcome::DeadToken { reason } if reason.contains("invalidUser"))
    );
    assert!(matches!(
        client
            .send(
                "r2",
                &json!({"title": "x", "content": "y", "timeToLive": 5})
            )
            .await,
        Outcome::Rejected { .. }
    ));
    // vivo refuses the auth token (10000): fetched again, sent once more.
    fake.expire_auth_tokens();
    assert!(matches!(client.send("r3", &m).await, Outcome::Sent { .. }));
    let wrong = VivoClient::new(VivoConfig {
        app_secret: "nope".into(),
        ..config
    })
    .unwrap();
    assert!(
        matches!(wrong.send("r1", &m).await, Outcome::Retry { reason, .. } if reason.contains("sign illegal"))
    );
}

#[tokio::test]
async fn meizu_signs_each_request_and_reads_per_id_failures() {
    let fake = FakeCn::start(accounts()).await.unwrap();
    let config = MeizuConfig {
        app_id: "110001".into(),
        app_secret: "meizu-secret".into(),
        base_url: Some(fake.base_url.clone()),
        allow_private_networks: true,
    };
    let client = MeizuClient::new(config.clone()).unwrap();
    let m = json!({"noticeBarInfo": {"noticeBarType": 0, "title": "Goal", "content": "2:1"},
                   "pushTimeInfo": {"offLine": 1, "validTime": 24}, "advanceInfo": {"notifyKey": "m7"}});
    let ids: Vec<String> = ["p1", "dead2"].iter().map(|s| s.to_string()).collect();
    let out = client.send(&ids, &m).await;
    assert!(matches!(out[0].1, Outcome::Sent { .. }));
    assert!(matches!(out[1].1, Outcome::DeadToken { .. }));
    assert_eq!(
        fake.received.lock()[0].1["messageJson"]["advanceInfo"]["notifyKey"],
        "m7"
    );
    assert!(matches!(
        client.send(&["busy1".to_string()], &m).await[0].1,
        Outcome::Retry { .. }
    ));
    let wrong = MeizuClient::new(MeizuConfig {
        app_secret: "nope".into(),
        ..config
    })
    .unwrap();
    assert!(
        matches!(&wrong.send(&["p1".to_string()], &m).await[0].1, Outcome::Rejected { reason, .. } if reason.starts_with("1006"))
    );
    // The signature of Meizu's own worked example form: sorted k=v, then the secret.
    let mut params = std::collections::BTreeMap::new();
    params.insert("b".to_string(), "2".to_string());
    params.insert("a".to_string(), "1".to_string());
    assert_eq!(
        pigeon_vendors::meizu::sign(&params, "s"),
        format!("{:032x}", md5_of("a=1b=2s"))
    );
}

fn md5_of(text: &str) -> u128 {
    use md5::Digest;
    u128::from_be_bytes(md5::Md5::digest(text).into())
}
