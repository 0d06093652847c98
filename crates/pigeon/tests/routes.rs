//! The routers the server merges do not share a path: each one answers a wrong method with
//! the methods of its own table (`pigeon_http::method_not_allowed`), which are then all the
//! path accepts.

use pigeon_core::RouteDoc;

/// Whether some concrete path matches both templates (`{name}` matches one segment).
fn overlap(a: &str, b: &str) -> bool {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.split('/').collect(), b.split('/').collect());
    a.len() == b.len()
        && a.iter()
            .zip(&b)
            .all(|(x, y)| x.starts_with('{') || y.starts_with('{') || x == y)
}

#[test]
fn no_path_is_served_by_two_routers() {
    let tables: [(&str, &[RouteDoc]); 3] = [
        ("jpush", pigeon_jpush::ROUTES),
        ("admin", pigeon_admin::ROUTES),
        ("gateway", pigeon_gateway::ROUTES),
    ];
    for (i, (name_a, a)) in tables.iter().enumerate() {
        for (name_b, b) in &tables[i + 1..] {
            for ra in a.iter() {
                for rb in b.iter() {
                    assert!(
                        !overlap(ra.path, rb.path),
                        "{name_a} {} and {name_b} {} match the same paths",
                        ra.path,
                        rb.path
                    );
                }
            }
        }
    }
}

#[test]
fn pigeons_own_api_is_what_left_the_jpush_table() {
    for prefix in ["/v3/callbacks", "/v3/vendors", "/v3/files"] {
        assert!(pigeon_admin::ROUTES
            .iter()
            .any(|r| r.path.starts_with(prefix)));
        assert!(!pigeon_jpush::ROUTES
            .iter()
            .any(|r| r.path.starts_with(prefix)));
    }
    // A push to a file is a JPush push.
    assert!(pigeon_jpush::ROUTES
        .iter()
        .any(|r| r.path == "/v3/push/file" && r.method == "post"));
}
