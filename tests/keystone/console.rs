//! The console's Keystone login: user name, password and project are exchanged with the
//! real Keystone for the user's own token; the session then acts as that user.

use reqwest::{redirect::Policy, Client, Response};

use crate::{identity::herald, server::Admin};

fn cookie_of(res: &Response) -> Option<String> {
    res.headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_owned)
}

fn csrf_of(page: &str) -> String {
    let start = page.find(r#"name="csrf" value=""#).expect("a CSRF field") + 19;
    page[start..start + page[start..].find('"').unwrap()].to_owned()
}

#[tokio::test]
async fn a_keystone_user_logs_in_to_the_console_with_name_password_and_project() {
    // Arrange
    let admin = Admin::shared().await;
    let (app, _) = herald(&admin, |_| {}).await;
    let alice = admin.user(None, &["member"]).await;
    let http = Client::builder().redirect(Policy::none()).build().unwrap();
    let url = |p: &str| format!("{}{p}", app.address);
    let login_page = http.get(url("/console/login")).send().await.unwrap();
    let cookie = cookie_of(&login_page).expect("the login form starts a session");
    let page = login_page.text().await.unwrap();
    assert!(page.contains(r#"name="password""#));
    let csrf = csrf_of(&page);
    let login = |password: &str| {
        http.post(url("/console/login"))
            .header("cookie", &cookie)
            .form(&[
                ("csrf", csrf.as_str()),
                ("user", alice.name.as_str()),
                ("password", password),
                ("project", alice.project_name.as_str()),
                ("domain", "Default"),
            ])
            .send()
    };

    // Act
    let refused = login("wrong password").await.unwrap();
    let accepted = login(&alice.password).await.unwrap();

    // Assert
    assert_eq!(refused.status(), 303);
    assert_eq!(refused.headers()["location"], "/console/login");
    assert_eq!(accepted.status(), 303);
    assert_eq!(accepted.headers()["location"], "/console/");
    let session = cookie_of(&accepted).expect("a new session");
    assert_ne!(session, cookie);
    let overview = http
        .get(url("/console/"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(overview.status(), 200);
    let page = overview.text().await.unwrap();
    assert!(page.contains(&alice.project_id), "acts in alice's project");
    assert!(page.contains(&alice.id), "as alice");
    assert!(!page.contains(&alice.password));
}
