//! The Web Push sender against a local push service (RFC 8030) that does what a browser's
//! push service and the browser do: checks the headers and the VAPID token, decrypts the
//! message with the subscription's private key, and answers 201, 410, 429 or 413.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::SecretKey;
use pigeon_vendors::webpush::{decrypt, Delivery, Subscription, WebPushClient};
use pigeon_vendors::Outcome;
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct Browser {
    secret: SecretKey,
    auth: [u8; 16],
    vapid: p256::ecdsa::VerifyingKey,
    got: Mutex<Vec<(String, Vec<u8>)>>,
}

async fn push_service(
    State(b): State<Arc<Browser>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> impl IntoResponse {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    match id.as_str() {
        "gone" => {
            return (
                StatusCode::GONE,
                HeaderMap::new(),
                "unsubscribed".to_string(),
            )
        }
        "busy" => {
            let mut r = HeaderMap::new();
            r.insert("retry-after", "7".parse().unwrap());
            return (StatusCode::TOO_MANY_REQUESTS, r, "slow down".to_string());
        }
        _ => {}
    }
    if h("ttl").parse::<u64>().is_err() || h("content-encoding") != "aes128gcm" {
        return (
            StatusCode::BAD_REQUEST,
            HeaderMap::new(),
            "bad headers".to_string(),
        );
    }
    let auth = h("authorization");
    let Some((token, _)) = auth
        .strip_prefix("vapid t=")
        .and_then(|r| r.split_once(", k="))
    else {
        return (
            StatusCode::UNAUTHORIZED,
            HeaderMap::new(),
            "no VAPID".to_string(),
        );
    };
    if pigeon_vendors::jwt::verify(token, &b.vapid).is_err() {
        return (
            StatusCode::FORBIDDEN,
            HeaderMap::new(),
            "bad VAPID".to_string(),
        );
    }
    match decrypt(&body, &b.secret, &b.auth) {
        Ok(plain) => {
            b.got.lock().unwrap().push((h("topic"), plain));
            let mut r = HeaderMap::new();
            r.insert("location", format!("/m/{id}/1").parse().unwrap());
            (StatusCode::CREATED, r, String::new())
        }
        Err(_) => (
            StatusCode::BAD_REQUEST,
            HeaderMap::new(),
            "cannot decrypt".to_string(),
        ),
    }
}

#[tokio::test]
async fn a_message_reaches_the_browser_decryptable_and_every_answer_is_told_apart() {
    let vapid = SecretKey::random(&mut rand::rngs::OsRng);
    let browser = Arc::new(Browser {
        secret: SecretKey::random(&mut rand::rngs::OsRng),
        auth: rand::random(),
        vapid: p256::ecdsa::VerifyingKey::from(vapid.public_key()),
        got: Mutex::new(Vec::new()),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/p/{id}", post(push_service))
        .with_state(browser.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    let client = WebPushClient::new(
        &b64(&vapid.to_bytes()),
        &b64(vapid.public_key().to_encoded_point(false).as_bytes()),
        "mailto:ops@example.com",
        true, // the push service is on 127.0.0.1
    )
    .unwrap();
    let sub = |id: &str| Subscription {
        endpoint: format!("{base}/p/{id}"),
        p256dh: b64(browser
            .secret
            .public_key()
            .to_encoded_point(false)
            .as_bytes()),
        auth: b64(&browser.auth),
    };
    let delivery = Delivery {
        ttl: 3600,
        urgency: "high",
        topic: Some("score".into()),
    };
    let payload = br#"{"title":"Goal","body":"2:1"}"#;
    assert_eq!(
        client.send(&sub("a1"), payload, &delivery).await,
        Outcome::Sent {
            id: "/m/a1/1".into()
        }
    );
    assert_eq!(
        browser.got.lock().unwrap().clone(),
        vec![("score".to_string(), payload.to_vec())]
    );
    assert!(matches!(
        client.send(&sub("gone"), payload, &delivery).await,
        Outcome::DeadToken { .. }
    ));
    assert!(
        matches!(client.send(&sub("busy"), payload, &delivery).await,
        Outcome::Retry { after: Some(d), .. } if d == Duration::from_secs(7))
    );
    // A message for another browser's keys cannot be read: the service refuses it.
    let mut other = sub("a2");
    other.p256dh = b64(SecretKey::random(&mut rand::rngs::OsRng)
        .public_key()
        .to_encoded_point(false)
        .as_bytes());
    assert!(matches!(
        client.send(&other, payload, &delivery).await,
        Outcome::Rejected { status: 400, .. }
    ));
    let mut broken = sub("a3");
    broken.p256dh = "not-a-key".into();
    assert!(matches!(
        client.send(&broken, payload, &delivery).await,
        Outcome::DeadToken { .. }
    ));
}
