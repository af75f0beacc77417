//! Logins against real PostgreSQL: right and wrong passwords, unknown users, throttling.

use std::net::IpAddr;

use shared::auth::AuthError;
use shared::testing::TestEnv;

#[tokio::test]
async fn passwords_and_unknown_users() {
    let env = TestEnv::new().await;
    let user = env.add_user("alice@example.test", "s3cret", None).await;
    let ip: IpAddr = "192.0.2.1".parse().unwrap();
    let auth = &env.context.auth;
    let ok = auth.login("Alice@Example.test", "s3cret", ip).await.unwrap();
    assert_eq!((ok.id, ok.address.as_str()), (user.id, "alice@example.test"));
    assert!(matches!(
        auth.login("alice@example.test", "wrong", ip).await,
        Err(AuthError::Invalid)
    ));
    // An unknown user gets the very same answer.
    assert!(matches!(
        auth.login("nobody@example.test", "s3cret", ip).await,
        Err(AuthError::Invalid)
    ));
}

#[tokio::test]
async fn an_attacker_is_throttled_but_the_real_user_gets_in_from_elsewhere() {
    // Defaults: 10 failures per IP per minute, 5 per account per minute.
    let env = TestEnv::new().await;
    env.add_user("alice@example.test", "s3cret", None).await;
    let auth = &env.context.auth;
    let attacker: IpAddr = "203.0.113.9".parse().unwrap();
    let home: IpAddr = "198.51.100.7".parse().unwrap();

    let mut throttled_after = None;
    for attempt in 1..=12 {
        match auth.login("alice@example.test", "guess", attacker).await {
            Err(AuthError::Invalid) => {}
            Err(AuthError::Throttled { .. }) => {
                throttled_after = Some(attempt);
                break;
            }
            other => panic!("attempt {attempt}: {other:?}"),
        }
    }
    // The account limit (5 per minute) trips first, for the address that failed. Attempts are
    // charged before the check, so the 6th is already refused (it used to be the 7th).
    assert_eq!(throttled_after, Some(6), "5 failures pass, the 6th is refused");
    // Even the right password is refused from the attacker's address while throttled...
    assert!(matches!(
        auth.login("alice@example.test", "s3cret", attacker).await,
        Err(AuthError::Throttled { .. })
    ));
    // ...but the real user, from an address with a clean record, is not locked out.
    auth.login("alice@example.test", "s3cret", home).await.unwrap();
}

#[tokio::test]
async fn one_address_spraying_many_accounts_is_throttled() {
    let env = TestEnv::new().await;
    let auth = &env.context.auth;
    let sprayer: IpAddr = "203.0.113.50".parse().unwrap();
    let mut throttled = false;
    for n in 0..12 {
        if let Err(AuthError::Throttled { retry_after }) = auth.login(&format!("u{n}@example.test"), "x", sprayer).await
        {
            assert!(retry_after.as_secs() <= 60);
            throttled = true;
            break;
        }
    }
    assert!(
        throttled,
        "10 failures per minute from one address must trip the per-IP limit"
    );
}
