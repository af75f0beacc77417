//! LIST-EXTENDED (RFC 5258) from outside: the RFC's §5 examples over its sample hierarchy
//! (Fruit, Fruit/Apple, Fruit/Banana, Tofu, Vegetable, Vegetable/Broccoli, Vegetable/Corn,
//! subscribed: Fruit/Banana, Fruit/Peach (deleted since), Vegetable, Vegetable/Broccoli), the
//! answers written from the RFC text. tinydc always gives `\HasChildren`/`\HasNoChildren` and
//! `\Noselect` beside `\NonExistent`, so the expected lines carry them too.

mod common;

use common::*;

/// The RFC 5258 §5 hierarchy and subscriptions, in a logged-in session.
async fn fruit_and_vegetables(server: &Server) -> Client {
    let mut c = server.login().await;
    for name in [
        "Fruit",
        "Fruit/Apple",
        "Fruit/Banana",
        "Fruit/Peach",
        "Tofu",
        "Vegetable",
        "Vegetable/Broccoli",
        "Vegetable/Corn",
    ] {
        c.ok(&format!("CREATE {name}")).await;
    }
    for name in ["Fruit/Banana", "Fruit/Peach", "Vegetable", "Vegetable/Broccoli"] {
        c.ok(&format!("SUBSCRIBE {name}")).await;
    }
    // "the mailbox called "Fruit/Peach" is subscribed to, but does not actually exist"
    c.ok("DELETE Fruit/Peach").await;
    c
}

/// The untagged lines about the sample hierarchy (the user's own INBOX, Sent ... left out).
fn sample(r: &Response) -> Vec<&str> {
    r.lines
        .iter()
        .map(String::as_str)
        .filter(|l| ["\"Fruit", "\"Tofu", "\"Vegetable"].iter().any(|n| l.contains(n)))
        .collect()
}

#[tokio::test]
async fn advertised() {
    let server = Server::start().await;
    let mut c = server.login().await;
    let caps = c.ok("CAPABILITY").await;
    assert!(
        caps.find("* CAPABILITY").split(' ').any(|w| w == "LIST-EXTENDED"),
        "{caps:#?}"
    );
}

/// RFC 5258 §5: the whole hierarchy, then RETURN (CHILDREN) at the top level.
#[tokio::test]
async fn hierarchy_and_children() {
    let server = Server::start().await;
    let mut c = fruit_and_vegetables(&server).await;
    let r = c.ok("LIST \"\" \"*\"").await;
    assert_eq!(
        sample(&r),
        [
            "* LIST (\\HasChildren) \"/\" \"Fruit\"",
            "* LIST (\\HasNoChildren) \"/\" \"Fruit/Apple\"",
            "* LIST (\\HasNoChildren) \"/\" \"Fruit/Banana\"",
            "* LIST (\\HasNoChildren) \"/\" \"Tofu\"",
            "* LIST (\\HasChildren) \"/\" \"Vegetable\"",
            "* LIST (\\HasNoChildren) \"/\" \"Vegetable/Broccoli\"",
            "* LIST (\\HasNoChildren) \"/\" \"Vegetable/Corn\"",
        ]
    );
    let r = c.ok("LIST () \"\" \"%\" RETURN (CHILDREN)").await;
    assert_eq!(
        sample(&r),
        [
            "* LIST (\\HasChildren) \"/\" \"Fruit\"",
            "* LIST (\\HasNoChildren) \"/\" \"Tofu\"",
            "* LIST (\\HasChildren) \"/\" \"Vegetable\"",
        ]
    );
    // REMOTE, with no remote mailboxes here, lists the same.
    let r = c.ok("LIST (REMOTE) \"\" \"%\" RETURN (CHILDREN)").await;
    assert_eq!(sample(&r).len(), 3, "{r:#?}");
}

/// RFC 5258 §5: LIST (SUBSCRIBED) shows subscribed names, existing or not, with
/// `\Subscribed`, and `\NonExistent` for Fruit/Peach; unlike LSUB, the unsubscribed Fruit is
/// not listed.
#[tokio::test]
async fn subscribed_selection() {
    let server = Server::start().await;
    let mut c = fruit_and_vegetables(&server).await;
    let r = c.ok("LIST (SUBSCRIBED) \"\" \"*\"").await;
    assert_eq!(
        sample(&r),
        [
            "* LIST (\\Subscribed \\HasNoChildren) \"/\" \"Fruit/Banana\"",
            "* LIST (\\Noselect \\NonExistent \\Subscribed \\HasNoChildren) \"/\" \"Fruit/Peach\"",
            "* LIST (\\Subscribed \\HasChildren) \"/\" \"Vegetable\"",
            "* LIST (\\Subscribed \\HasNoChildren) \"/\" \"Vegetable/Broccoli\"",
        ]
    );
    // RETURN (SUBSCRIBED) without the selection option marks, and lists all.
    let r = c.ok("LIST \"\" \"Fruit/%\" RETURN (SUBSCRIBED)").await;
    assert_eq!(
        sample(&r),
        [
            "* LIST (\\HasNoChildren) \"/\" \"Fruit/Apple\"",
            "* LIST (\\Subscribed \\HasNoChildren) \"/\" \"Fruit/Banana\"",
        ]
    );
    // LSUB keeps its RFC 3501 §6.3.9 answer.
    let r = c.ok("LSUB \"\" \"*\"").await;
    assert_eq!(
        sample(&r),
        [
            "* LSUB () \"/\" \"Fruit/Banana\"",
            "* LSUB () \"/\" \"Fruit/Peach\"",
            "* LSUB () \"/\" \"Vegetable\"",
            "* LSUB () \"/\" \"Vegetable/Broccoli\"",
        ]
    );
    let r = c.ok("LSUB \"\" \"%\"").await;
    assert_eq!(
        sample(&r),
        ["* LSUB (\\Noselect) \"/\" \"Fruit\"", "* LSUB () \"/\" \"Vegetable\""]
    );
}

/// RFC 5258 §5 (and §3.5): with RECURSIVEMATCH, "%" also gives the parents whose
/// subscribed children it does not reach, with CHILDINFO; a parent matched itself has both.
#[tokio::test]
async fn recursivematch_childinfo() {
    let server = Server::start().await;
    let mut c = fruit_and_vegetables(&server).await;
    let r = c
        .ok("LIST (SUBSCRIBED RECURSIVEMATCH) \"\" \"%\" RETURN (CHILDREN)")
        .await;
    assert_eq!(
        sample(&r),
        [
            "* LIST (\\HasChildren) \"/\" \"Fruit\" (\"CHILDINFO\" (\"SUBSCRIBED\"))",
            "* LIST (\\Subscribed \\HasChildren) \"/\" \"Vegetable\" (\"CHILDINFO\" (\"SUBSCRIBED\"))",
        ]
    );
    // With "*" every subscribed name is reached: no CHILDINFO is due.
    let r = c.ok("LIST (SUBSCRIBED RECURSIVEMATCH) \"\" \"*\"").await;
    assert!(!r.has("CHILDINFO"), "{r:#?}");
    assert_eq!(sample(&r).len(), 4, "{r:#?}");
    // RFC 9051 §6.3.9's table of RECURSIVEMATCH answers: a name that does not exist, not selected, with a selected
    // child: (\NonExistent) + CHILDINFO.
    c.ok("CREATE Fruit2/Kiwi").await;
    c.ok("SUBSCRIBE Fruit2/Kiwi").await;
    c.ok("DELETE Fruit2/Kiwi").await;
    c.ok("DELETE Fruit2").await;
    let r = c.ok("LIST (SUBSCRIBED RECURSIVEMATCH) \"\" \"Fruit2\"").await;
    assert_eq!(
        r.lines,
        ["* LIST (\\Noselect \\NonExistent \\HasNoChildren) \"/\" \"Fruit2\" (\"CHILDINFO\" (\"SUBSCRIBED\"))"]
    );
    // Without RECURSIVEMATCH, Fruit2 is neither subscribed nor existing: not listed.
    let r = c.ok("LIST (SUBSCRIBED) \"\" \"Fruit2\"").await;
    assert!(r.lines.is_empty(), "{r:#?}");
}

/// RFC 5258 §3: several patterns in one LIST, each with the reference.
#[tokio::test]
async fn several_patterns() {
    let server = Server::start().await;
    let mut c = fruit_and_vegetables(&server).await;
    let r = c.ok("LIST \"\" (\"INBOX\" \"Vegetable/%\" Tofu)").await;
    assert_eq!(
        r.lines,
        [
            "* LIST (\\HasNoChildren) \"/\" \"INBOX\"",
            "* LIST (\\HasNoChildren) \"/\" \"Tofu\"",
            "* LIST (\\HasNoChildren) \"/\" \"Vegetable/Broccoli\"",
            "* LIST (\\HasNoChildren) \"/\" \"Vegetable/Corn\"",
        ]
    );
    let r = c.ok("LIST \"Fruit/\" (\"Apple\" \"B*\")").await;
    assert_eq!(
        r.lines,
        [
            "* LIST (\\HasNoChildren) \"/\" \"Fruit/Apple\"",
            "* LIST (\\HasNoChildren) \"/\" \"Fruit/Banana\"",
        ]
    );
    // A pattern no name can match (8-bit without UTF8=ACCEPT) lists nothing for itself.
    let r = c.ok("LIST \"\" (\"Tofu\" \"T\u{f6}fu\")").await;
    assert_eq!(r.lines, ["* LIST (\\HasNoChildren) \"/\" \"Tofu\""]);
    // SPECIAL-USE selection with several patterns.
    let r = c.ok("LIST (SPECIAL-USE) \"\" (\"Sent\" \"Tofu\" \"Trash\")").await;
    assert_eq!(r.lines.len(), 2, "{r:#?}");
    assert!(
        r.has("\\Sent) \"/\" \"Sent\"") && r.has("\\Trash) \"/\" \"Trash\""),
        "{r:#?}"
    );
}

/// RFC 5258 §3: unknown options are refused with BAD, as is RECURSIVEMATCH alone (§3.1).
#[tokio::test]
async fn bad_options() {
    let server = Server::start().await;
    let mut c = fruit_and_vegetables(&server).await;
    c.bad("LIST (RECURSIVEMATCH) \"\" \"%\"").await;
    c.bad("LIST (REMOTE RECURSIVEMATCH) \"\" \"%\"").await;
    c.bad("LIST (SHINY) \"\" \"%\"").await;
    c.bad("LIST \"\" \"%\" RETURN (SHINY)").await;
    c.bad("LIST \"\" () RETURN (CHILDREN)").await;
    c.bad("LIST \"\" \"%\" RETURN (STATUS (MESSAGES BOGUS))").await;
    let many = vec!["x"; 65].join(" ");
    c.bad(&format!("LIST \"\" ({many})")).await;
    // The session goes on.
    c.ok("LIST \"\" Tofu").await;
}

/// Hostile patterns are answered at once: a 400 KB run of wildcards in a literal beside another
/// pattern, and patterns longer than any name (LIST and LSUB).
#[tokio::test]
async fn long_patterns() {
    let server = Server::start().await;
    let mut c = fruit_and_vegetables(&server).await;
    let stars = format!("{}Tofu", "*%".repeat(200_000));
    let tag = c.next_tag();
    c.write(format!("{tag} LIST \"\" ({{{}+}}\r\n{stars} Fruit)\r\n", stars.len()).as_bytes())
        .await;
    let started = std::time::Instant::now();
    let r = c.until(&tag).await;
    assert!(r.tagged.contains(" OK"), "{r:#?}");
    assert_eq!(
        r.lines,
        [
            "* LIST (\\HasChildren) \"/\" \"Fruit\"",
            "* LIST (\\HasNoChildren) \"/\" \"Tofu\""
        ]
    );
    let long = format!("*{}*", "a".repeat(2000));
    let tag = c.next_tag();
    c.write(format!("{tag} LSUB \"\" {{{}+}}\r\n{long}\r\n", long.len()).as_bytes())
        .await;
    let r = c.until(&tag).await;
    assert!(r.tagged.contains(" OK") && r.lines.is_empty(), "{r:#?}");
    let r = c.ok(&format!("LIST \"\" \"{long}\"")).await;
    assert!(r.lines.is_empty(), "{r:#?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}
