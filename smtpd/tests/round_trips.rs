//! What one SMTP delivery to a local user asks of PostgreSQL, counted from sqlx's own statement
//! log (`shared::testing::statements`) on the real server over a real database: RCPT looks the
//! recipient up, DATA stores the message. A step whose count grows fails here. The statement
//! log is process-wide: keep this the only test of this file.

mod common;

use common::*;
use shared::testing::statements;

#[tokio::test]
async fn one_delivery_asks_postgres_little() {
    statements::capture();
    let h = start().await;
    let user = h.add_user("alice@example.test", "pw", None).await;
    let mut report = Vec::new();
    for round in 0..3 {
        let mut c = Client::connect(h.mx()).await;
        c.expect("EHLO client.example.org", 250).await;
        statements::taken();
        c.expect("MAIL FROM:<bob@example.org>", 250).await;
        let mail = statements::taken();
        c.expect("RCPT TO:<alice@example.test>", 250).await;
        let rcpt = statements::taken();
        let done = c
            .data(&message(
                "bob@example.org",
                "alice@example.test",
                &format!("round{round}"),
            ))
            .await;
        assert_eq!(done.code, 250, "{done:?}");
        let data = statements::taken();
        c.expect("QUIT", 221).await;
        if round == 2 {
            report = vec![("MAIL", mail), ("RCPT", rcpt), ("DATA", data)];
        }
    }
    for (name, statements) in &report {
        println!("{name}: {} statements", statements.len());
        for s in statements {
            println!("    {s}");
        }
    }
    assert_eq!(h.inbox(user).await.len(), 3);
    let of = |name: &str| &report.iter().find(|(n, _)| *n == name).expect("measured").1;
    assert!(of("MAIL").is_empty(), "MAIL: {:#?}", of("MAIL"));
    // RCPT: the recipient's lookup, which reads the limit too: none, so no reservation row.
    assert!(of("RCPT").len() <= 1, "RCPT: {:#?}", of("RCPT"));
    // DATA: the message stored in ONE statement committed on its own (shared::mailstore
    // `insert_unlimited`: usage delta, UID and MODSEQ, blob reference, pending body, message
    // row, event); no BEGIN or COMMIT of its own, no usage fold or warning read for a user
    // without a limit.
    assert!(of("DATA").len() <= 1, "DATA: {:#?}", of("DATA"));
}
