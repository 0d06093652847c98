//! A fresh database per test, on the server `PIGEON_TEST_POSTGRES_URL` names (a superuser
//! URL, `postgres://user@host:port/db`).

#![allow(dead_code)]

use tokio_postgres::NoTls;

/// The server's URL: required (these tests fail rather than skip without one).
pub fn server_url() -> String {
    match std::env::var("PIGEON_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "PIGEON_TEST_POSTGRES_URL is not set: these tests need a PostgreSQL server, e.g. \
             PIGEON_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:55432/postgres \
             (a superuser: each test creates a database of its own)"
        ),
    }
}

/// `url` naming database `db` instead.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    format!("{base}/{db}{query}")
}

/// A connection to the server's own database, for setting tests up.
pub async fn admin(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// A new, empty database; its URL.
pub async fn fresh_db(test: &str) -> String {
    let url = server_url();
    let name = format!("pigeon_t_{test}_{:08x}", rand::random::<u32>());
    admin(&url)
        .await
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
    with_database(&url, &name)
}

/// A connection to a test's database, to look at (or tamper with) it directly.
pub async fn raw(url: &str) -> tokio_postgres::Client {
    admin(url).await
}
