use crate::session::{Sessions, Who, MAX_ATTEMPTS, MAX_SESSIONS};

#[test]
fn sessions_are_bounded_and_ids_are_256_bit_hex() {
    let s = Sessions::default();
    let first = s.create(Who::App("k".into()));
    assert_eq!(first.len(), 64);
    assert!(first.bytes().all(|b| b.is_ascii_hexdigit()));
    for _ in 0..MAX_SESSIONS + 10 {
        s.create(Who::Operator(None));
    }
    assert_eq!(s.len(), MAX_SESSIONS);
    // The oldest made room.
    assert!(s.get(&first).is_none());
}

#[test]
fn an_operator_picks_an_app_and_an_app_session_cannot() {
    let s = Sessions::default();
    let op = s.create(Who::Operator(None));
    let app = s.create(Who::App("a".into()));
    assert!(s.pick(&op, "b".into()));
    assert_eq!(
        s.get(&op).map(|x| x.who),
        Some(Who::Operator(Some("b".into())))
    );
    assert!(!s.pick(&app, "b".into()));
    s.remove(&op);
    assert!(s.get(&op).is_none());
}

#[test]
fn sign_in_attempts_are_limited_per_address() {
    let s = Sessions::default();
    let ip = Some("10.0.0.1".parse().unwrap());
    for _ in 0..MAX_ATTEMPTS {
        assert!(s.attempt(ip));
    }
    assert!(!s.attempt(ip));
    assert!(s.attempt(Some("10.0.0.2".parse().unwrap())));
}
