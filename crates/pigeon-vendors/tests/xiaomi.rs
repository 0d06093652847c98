//! The Mi Push client against the local fake: the form Mi Push wants, the app secret, and
//! a batch's answer split into sent, dead, retry and refused per registration id.

use pigeon_vendors::fake_xiaomi::FakeXiaomi;
use pigeon_vendors::xiaomi::{XiaomiClient, XiaomiConfig, XiaomiMessage};
use pigeon_vendors::Outcome;
use std::time::Duration;

fn ids(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn message() -> XiaomiMessage {
    XiaomiMessage {
        title: "Goal".into(),
        description: "2:1 in the 90th minute".into(),
        payload: Some(r#"{"msg_id":"7"}"#.into()),
        notify_id: Some(7),
        time_to_live: Some(Duration::from_secs(3600)),
        extra: vec![("channel_id".into(), "sports".into())],
        ..Default::default()
    }
}

#[tokio::test]
async fn a_batch_is_sent_and_its_dead_ids_told_apart() {
    let fake = FakeXiaomi::start("secret-1", "com.example.app")
        .await
        .unwrap();
    let client = XiaomiClient::new(XiaomiConfig {
        app_secret: "secret-1".into(),
        package_name: "com.example.app".into(),
        base_url: Some(fake.base_url.clone()),
        allow_private_networks: true,
    })
    .unwrap();
    let out = client.send(&ids(&["r1", "dead2", "r3"]), &message()).await;
    assert!(matches!(&out[0].1, Outcome::Sent { id } if id == "sdm00000001"));
    assert!(matches!(&out[1].1, Outcome::DeadToken { .. }));
    assert!(matches!(&out[2].1, Outcome::Sent { .. }));
    let form = fake.received.lock()[0].clone();
    assert_eq!(form["registration_id"], "r1,dead2,r3");
    assert_eq!(form["restricted_package_name"], "com.example.app");
    assert_eq!(form["title"], "Goal");
    assert_eq!(form["description"], "2:1 in the 90th minute");
    assert_eq!(form["payload"], r#"{"msg_id":"7"}"#);
    assert_eq!(form["notify_id"], "7");
    assert_eq!(form["time_to_live"], "3600000");
    assert_eq!(form["extra.channel_id"], "sports");
    assert_eq!(form["pass_through"], "0");

    let all_dead = client.send(&ids(&["dead1", "dead2"]), &message()).await;
    assert!(all_dead
        .iter()
        .all(|(_, o)| matches!(o, Outcome::DeadToken { .. })));
    let busy = client.send(&ids(&["busy1"]), &message()).await;
    assert!(matches!(&busy[0].1, Outcome::Retry { .. }));
    let slow = client.send(&ids(&["slow1"]), &message()).await;
    assert!(matches!(&slow[0].1, Outcome::Retry { reason, .. } if reason.contains("busy")));
    let mut untitled = message();
    untitled.title = String::new();
    let refused = client.send(&ids(&["r1"]), &untitled).await;
    assert!(matches!(
        &refused[0].1,
        Outcome::Rejected { status: 20001, .. }
    ));
    let too_many: Vec<String> = (0..1001).map(|i| format!("r{i}")).collect();
    assert!(client
        .send(&too_many, &message())
        .await
        .iter()
        .all(|(_, o)| matches!(o, Outcome::Rejected { .. })));

    let wrong = XiaomiClient::new(XiaomiConfig {
        app_secret: "other".into(),
        package_name: "com.example.app".into(),
        base_url: Some(fake.base_url.clone()),
        allow_private_networks: true,
    })
    .unwrap();
    let out = wrong.send(&ids(&["r1"]), &message()).await;
    assert!(matches!(&out[0].1, Outcome::Rejected { status: 22000, .. }));
}

/// A recall: the v3 regid revoke with the notify id the notification was sent with.
#[tokio::test]
async fn a_recall_names_the_notify_id_and_regids() {
    let fake = FakeXiaomi::start("mi-secret", "com.example.app")
        .await
        .unwrap();
    let client = XiaomiClient::new(XiaomiConfig {
        app_secret: "mi-secret".into(),
        package_name: "com.example.app".into(),
        base_url: Some(fake.base_url.clone()),
        allow_private_networks: true,
    })
    .unwrap();
    let ids: Vec<String> = vec!["r1".into(), "r2".into()];
    assert!(matches!(
        client.revoke(42, &ids).await,
        Outcome::Sent { .. }
    ));
    let got = fake.revoked.lock()[0].clone();
    assert_eq!(
        (got["notify_id"].as_str(), got["registration_id"].as_str()),
        ("42", "r1,r2")
    );
    assert!(matches!(
        client.revoke(42, &[]).await,
        Outcome::Rejected { .. }
    ));
    let wrong = XiaomiClient::new(XiaomiConfig {
        app_secret: "nope".into(),
        package_name: "com.example.app".into(),
        base_url: Some(fake.base_url.clone()),
        allow_private_networks: true,
    })
    .unwrap();
    assert!(matches!(
        wrong.revoke(42, &ids).await,
        Outcome::Rejected { .. }
    ));
}
