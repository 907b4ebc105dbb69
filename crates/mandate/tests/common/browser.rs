//! A browser for the sign-in and consent pages: follows no redirect, keeps
//! cookies (and checks each is HttpOnly, SameSite=Lax and Secure).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use reqwest::StatusCode;

use super::Harness;

/// A browser: follows nothing, keeps cookies.
pub struct Browser<'h> {
    pub h: &'h Harness,
    pub http: reqwest::Client,
    pub cookies: HashMap<String, String>,
}

pub struct Page {
    pub status: StatusCode,
    pub location: Option<String>,
    pub body: String,
}

impl Page {
    pub fn hidden(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self
            .body
            .find(&marker)
            .unwrap_or_else(|| panic!("no {name} in {}", self.body))
            + marker.len();
        let end = self.body[start..].find('"').unwrap();
        self.body[start..start + end].to_owned()
    }

    pub fn query(&self, key: &str) -> Option<String> {
        let url = url::Url::parse(self.location.as_deref()?).ok()?;
        url.query_pairs()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }
}

impl<'h> Browser<'h> {
    pub fn new(h: &'h Harness) -> Self {
        Self {
            h,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: HashMap::new(),
        }
    }

    pub async fn send(&mut self, req: reqwest::RequestBuilder) -> Page {
        let cookie: Vec<String> = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let resp = req
            .header("cookie", cookie.join("; "))
            .send()
            .await
            .unwrap();
        for c in resp.headers().get_all("set-cookie") {
            let c = c.to_str().unwrap();
            assert!(
                c.contains("HttpOnly") && c.contains("SameSite=Lax") && c.contains("Secure"),
                "{c}"
            );
            let (k, rest) = c.split_once('=').unwrap();
            let v = rest.split(';').next().unwrap();
            self.cookies.insert(k.to_owned(), v.to_owned());
        }
        Page {
            status: resp.status(),
            location: resp
                .headers()
                .get("location")
                .map(|v| v.to_str().unwrap().to_owned()),
            body: resp.text().await.unwrap(),
        }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let req = self.http.get(format!("{}{path}", self.h.base));
        self.send(req).await
    }

    /// Submits the sign-in form of `page` as alice.
    pub async fn sign_in(&mut self, page: &Page, password: &str) -> Page {
        let form = [
            ("csrf", page.hidden("csrf")),
            ("request", page.hidden("request")),
            ("username", "alice".to_owned()),
            ("password", password.to_owned()),
        ];
        let req = self.http.post(format!("{}/login", self.h.base)).form(&form);
        self.send(req).await
    }

    /// Approves the consent form of `page` with `scope` left checked.
    pub async fn approve(&mut self, page: &Page, scope: &str) -> Page {
        let form = [
            ("csrf", page.hidden("csrf")),
            ("request", page.hidden("request")),
            ("scope", scope.to_owned()),
            ("decision", "approve".to_owned()),
        ];
        let req = self
            .http
            .post(format!("{}/consent", self.h.base))
            .form(&form);
        self.send(req).await
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let req = self.http.post(format!("{}{path}", self.h.base)).form(form);
        self.send(req).await
    }
}
