//! The private PostgreSQL harness itself: one server per test binary, a fresh database per
//! test.

use pigeon_store_conformance::postgres::TestPostgres;

async fn query_one(url: &str, sql: &str) -> String {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connects");
    let driver = tokio::spawn(connection);
    let row = client.query_one(sql, &[]).await.expect("a row");
    let value: String = row.get(0);
    drop(client);
    let _ = driver.await;
    value
}

#[tokio::test(flavor = "multi_thread")]
async fn each_test_gets_a_fresh_database_on_one_server() {
    let server = TestPostgres::get();
    // The same server every time.
    assert!(std::ptr::eq(server, TestPostgres::get()));
    let (a, b) = (
        server.create_database().await,
        server.create_database().await,
    );
    assert_ne!(a.name, b.name);
    assert_eq!(
        query_one(&a.url, "SELECT current_database()::text").await,
        a.name
    );
    assert_eq!(
        query_one(&b.url, "SELECT current_database()::text").await,
        b.name
    );
    // Empty, and separate.
    let (client, connection) = tokio_postgres::connect(&a.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let driver = tokio::spawn(connection);
    client
        .batch_execute("CREATE TABLE t (x INT); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    drop(client);
    let _ = driver.await;
    assert_eq!(
        query_one(
            &b.url,
            "SELECT count(*)::text FROM pg_tables WHERE schemaname = 'public'"
        )
        .await,
        "0"
    );
    if server.is_private() {
        // Only on 127.0.0.1, as the postgres superuser.
        assert!(server
            .admin_url()
            .starts_with("postgres://postgres@127.0.0.1:"));
        let version = query_one(&a.url, "SHOW server_version").await;
        assert!(!version.is_empty());
        assert_eq!(query_one(&a.url, "SHOW fsync").await, "off");
    }
    a.drop_database().await;
    b.drop_database().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn many_tests_at_once_share_the_server() {
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            tokio::spawn(async {
                let db = TestPostgres::get().create_database().await;
                let name = query_one(&db.url, "SELECT current_database()::text").await;
                assert_eq!(name, db.name);
                db.drop_database().await;
                name
            })
        })
        .collect();
    let mut names = Vec::new();
    for t in tasks {
        names.push(t.await.unwrap());
    }
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 6);
}
