//! Server-rendered HTML for the interactive part of the authorization code
//! flow: sign-in, consent, the "connected agents" (grants) page, and the
//! error page shown when a request must not be redirected back to the client
//! (unknown `client_id`, unregistered `redirect_uri`).
//!
//! Every page is a pure function from borrowed data to a `String`; handlers
//! set the status, headers and cookies.
//!
//! # Why no JavaScript
//!
//! These pages are where a user hands authority to an agent, so they are kept
//! as small and inspectable as possible:
//!
//! * a strict `Content-Security-Policy` (`default-src 'none'; style-src
//!   'unsafe-inline'; frame-ancestors 'none'`, sent by `browser.rs`) allows no
//!   script at all, so an injection bug cannot become script execution
//!   (`form-action` is left out: Chrome applies it to the redirect back to
//!   the client after consent);
//! * plain HTML forms work everywhere: with scripts disabled, in text browsers,
//!   with every assistive technology, and with no build step;
//! * no external assets (fonts, images, stylesheets) means no third party learns
//!   who is signing in, and nothing can be swapped under our feet. The only
//!   styling is the inline `<style>` block in [`document`].
//!
//! # Escaping
//!
//! Every piece of dynamic text goes through the private [`escape`] function
//! (`&`, `<`, `>`, `"` and `'`), both in text and in attribute values, and
//! every attribute value is double-quoted. Nothing here builds URLs from user
//! input except the grant id in the revoke form's action; grant ids are
//! base64url, so escaping is all they need.
//!
//! # Accessibility (WCAG 2.1 AA)
//!
//! * `<html lang="en">`, a descriptive `<title>`, one `<main>` landmark and a
//!   single `<h1>` per page;
//! * every visible `<input>` has a `<label for>` pointing at its `id`; the
//!   consent checkboxes are grouped in a `<fieldset>` with a `<legend>`;
//! * every button is a real `<button type="submit">` whose visible text is its
//!   accessible name (the revoke buttons name the client, so a screen reader
//!   user hears which agent a button revokes, and voice control users can say
//!   what they see);
//! * text contrast is at least 4.5:1 (most pairs are 7:1 or more) and input
//!   borders and focus outlines at least 3:1 against their background;
//! * focus is always visible: a 3px outline on keyboard focus, never removed
//!   without a replacement;
//! * errors are announced with `role="alert"` and tied to the fields with
//!   `aria-describedby`/`aria-invalid`; notices use `role="status"`;
//!   warnings carry a text prefix, never colour alone;
//! * a viewport meta tag, relative units, wrapping of long URIs and a
//!   keyboard-focusable scroll region around the grants table keep every page
//!   usable at 320 CSS pixels wide and at 200% zoom; touch targets are at
//!   least 44px high;
//! * native controls only, so everything is reachable and operable with the
//!   keyboard in source order.

/// Product name, appended to every `<title>`.
const PRODUCT: &str = "Mandate";

/// The whole stylesheet. Colours and their contrast ratios on white
/// (`#ffffff`) or the page background (`#f3f4f6`):
///
/// * body text `#1a1a1a`: 17:1; muted text `#4b5563`: 7.5:1 / 6.9:1;
/// * primary button: white on `#1d4ed8`, 6.7:1;
/// * danger button text and border `#b91c1c`: 6.5:1;
/// * client host `#1e3a8a` on `#e0e7ff`: 8.4:1;
/// * error `#991b1b` on `#fef2f2`, warning `#7c2d12` on `#fff7ed`, notice
///   `#14532d` on `#f0fdf4`: all above 7:1;
/// * input borders `#6b7280`: 4.8:1 (non-text minimum is 3:1);
/// * focus outline `#1d4ed8`, drawn 2px outside the control, so always
///   against the white or light grey background: 6.7:1 / 6.1:1.
///
/// `:focus:not(:focus-visible)` hides the ring only for mouse clicks in
/// browsers that understand `:focus-visible`; older browsers drop that rule as
/// invalid and keep the ring, so keyboard focus is never invisible.
const STYLE: &str = "\
*,*::before,*::after{box-sizing:border-box}\
html{color-scheme:light;-webkit-text-size-adjust:100%;text-size-adjust:100%}\
body{margin:0;background:#f3f4f6;color:#1a1a1a;font-family:system-ui,-apple-system,\"Segoe UI\",Roboto,\"Helvetica Neue\",Arial,sans-serif;font-size:1rem;line-height:1.5}\
main{max-width:34rem;margin:0 auto;padding:1.5rem 1rem}\
main.wide{max-width:60rem}\
.card{background:#fff;border:1px solid #d1d5db;border-radius:.5rem;padding:1.25rem}\
h1{font-size:1.5rem;line-height:1.25;margin:0 0 .75rem;overflow-wrap:anywhere}\
p{margin:0 0 1rem}\
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.9em;background:#eef0f3;color:#1a1a1a;padding:.1em .3em;border-radius:.25rem;overflow-wrap:anywhere}\
.muted{color:#4b5563}\
.eyebrow{color:#4b5563;font-size:.875rem;font-weight:600;margin:0 0 .25rem;text-transform:uppercase;letter-spacing:.05em}\
.host{display:inline-block;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-weight:700;color:#1e3a8a;background:#e0e7ff;border:1px solid #a5b4fc;border-radius:.25rem;padding:0 .35em;overflow-wrap:anywhere}\
.lede{font-size:1.125rem}\
.error,.warning,.notice{border:2px solid;border-radius:.375rem;padding:.75rem 1rem;margin:0 0 1rem}\
.error{color:#991b1b;background:#fef2f2;border-color:#b91c1c}\
.warning{color:#7c2d12;background:#fff7ed;border-color:#c2410c}\
.notice{color:#14532d;background:#f0fdf4;border-color:#15803d}\
label{font-weight:600}\
.field{margin:0 0 1rem}\
.field label{display:block;margin:0 0 .25rem}\
input[type=text],input[type=password]{display:block;width:100%;font:inherit;color:#1a1a1a;background:#fff;padding:.6rem .75rem;border:2px solid #6b7280;border-radius:.375rem}\
input[aria-invalid=true]{border-color:#b91c1c}\
fieldset{border:1px solid #d1d5db;border-radius:.375rem;margin:0 0 1rem;padding:.75rem 1rem}\
legend{font-weight:700;padding:0 .25rem}\
.scope{display:flex;align-items:flex-start;gap:.6rem;padding:.4rem 0}\
.scope input{width:1.25rem;height:1.25rem;margin:.15rem 0 0;flex:none;accent-color:#1d4ed8}\
.scope label{font-weight:400;overflow-wrap:anywhere}\
.actions{display:flex;flex-wrap:wrap;gap:.75rem}\
button{font:inherit;font-weight:600;min-height:2.75rem;padding:.5rem 1.25rem;border:2px solid #1d4ed8;border-radius:.375rem;cursor:pointer;text-align:center}\
.primary{background:#1d4ed8;color:#fff}\
.primary:hover{background:#1e40af;border-color:#1e40af}\
.secondary{background:#fff;color:#1d4ed8}\
.secondary:hover{background:#eff6ff}\
.danger{background:#fff;color:#b91c1c;border-color:#b91c1c}\
.danger:hover{background:#fef2f2}\
:focus{outline:3px solid #1d4ed8;outline-offset:2px}\
:focus:not(:focus-visible){outline:none}\
.bar{display:flex;flex-wrap:wrap;align-items:center;justify-content:space-between;gap:.75rem;max-width:60rem;margin:0 auto;padding:1rem 1rem 0}\
.bar p{margin:0}\
.bar form{margin:0}\
.table-wrap{overflow-x:auto;background:#fff;border:1px solid #d1d5db;border-radius:.5rem}\
table{width:100%;border-collapse:collapse}\
caption{text-align:left;font-weight:700;padding:.75rem .75rem .25rem}\
th,td{text-align:left;vertical-align:top;padding:.6rem .75rem;border-top:1px solid #d1d5db}\
th{white-space:nowrap}\
td form{margin:0}\
.grant-host{display:block;margin-top:.25rem}\
@media (forced-colors:active){.host,.error,.warning,.notice,button{border-color:CanvasText}}\
";

/// HTML-escapes `s` for use in text content or in a double- or single-quoted
/// attribute value.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page shell: doctype, language, metadata, the stylesheet, and `body`
/// (trusted markup built by the page functions) inside `<body>`.
/// `title` is escaped here.
fn document(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n\
         <html lang=\"en\">\n\
         <head>\n\
         <meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"color-scheme\" content=\"light\">\n\
         <meta name=\"referrer\" content=\"no-referrer\">\n\
         <meta name=\"robots\" content=\"noindex, nofollow\">\n\
         <title>{title} - {PRODUCT}</title>\n\
         <style>{STYLE}</style>\n\
         </head>\n\
         <body>\n{body}</body>\n\
         </html>\n",
        title = escape(title),
    )
}

/// A hidden form field; `name` is a literal, `value` is escaped.
fn hidden(name: &str, value: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"{name}\" value=\"{}\">\n",
        escape(value)
    )
}

/// The client's display name, or a neutral stand-in if it registered none.
fn display_name(client_name: &str) -> &str {
    if client_name.trim().is_empty() {
        "An unnamed client"
    } else {
        client_name
    }
}

// ---------------------------------------------------------------------------
// Sign-in
// ---------------------------------------------------------------------------

/// Data for the sign-in page.
#[derive(Debug, Clone, Copy)]
pub struct LoginPage<'a> {
    /// Anti-forgery token, echoed in a hidden field.
    pub csrf: &'a str,
    /// Opaque reference to the pending authorization request.
    pub request: &'a str,
    /// The client the user is signing in for.
    pub client_name: &'a str,
    /// Host of the client's website; may be empty.
    pub client_host: &'a str,
    /// Username to pre-fill after a failed attempt; may be empty.
    pub username: &'a str,
    /// Why the previous attempt failed, if it did.
    pub error: Option<&'a str>,
    /// Upstream OpenID Providers offered as buttons below the form.
    pub providers: &'a [ProviderButton<'a>],
}

/// A "Sign in with ..." button for an upstream OpenID Provider.
#[derive(Debug, Clone, Copy)]
pub struct ProviderButton<'a> {
    /// The provider id (`[a-z0-9-]`, checked at start), used in the action.
    pub id: &'a str,
    /// The button label's provider name.
    pub name: &'a str,
}

/// Renders the sign-in form (`POST /login` with `csrf`, `request`, `username`
/// and `password`), then one form per upstream provider (`POST
/// /login/oidc/<id>` with `csrf` and `request`).
pub fn login_page(p: &LoginPage<'_>) -> String {
    let mut body = String::new();
    body.push_str("<main>\n<div class=\"card\">\n<h1>Sign in</h1>\n");

    // "Sign in to continue to <client> (<host>)", the host omitted if unknown.
    body.push_str(&format!(
        "<p>Sign in to continue to <strong>{}</strong>",
        escape(display_name(p.client_name))
    ));
    if !p.client_host.is_empty() {
        body.push_str(&format!(
            " (<span class=\"host\">{}</span>)",
            escape(p.client_host)
        ));
    }
    body.push_str("</p>\n");

    // The error sits before the form so it is read first, and both fields
    // point at it so it is read again when either is focused.
    let field_error = match p.error {
        Some(error) => {
            body.push_str(&format!(
                "<div class=\"error\" role=\"alert\" id=\"login-error\">{}</div>\n",
                escape(error)
            ));
            " aria-invalid=\"true\" aria-describedby=\"login-error\""
        }
        None => "",
    };

    body.push_str("<form method=\"post\" action=\"/login\">\n");
    body.push_str(&hidden("csrf", p.csrf));
    body.push_str(&hidden("request", p.request));
    body.push_str(&format!(
        "<div class=\"field\">\n\
         <label for=\"username\">Username</label>\n\
         <input type=\"text\" id=\"username\" name=\"username\" value=\"{}\" \
         autocomplete=\"username\" autocapitalize=\"none\" spellcheck=\"false\" required{field_error}>\n\
         </div>\n\
         <div class=\"field\">\n\
         <label for=\"password\">Password</label>\n\
         <input type=\"password\" id=\"password\" name=\"password\" \
         autocomplete=\"current-password\" required{field_error}>\n\
         </div>\n\
         <button type=\"submit\" class=\"primary\">Sign in</button>\n",
        escape(p.username)
    ));
    body.push_str("</form>\n");
    if !p.providers.is_empty() {
        body.push_str("<p class=\"muted\">Or sign in with your organisation:</p>\n");
    }
    for provider in p.providers {
        body.push_str(&format!(
            "<form method=\"post\" action=\"/login/oidc/{}\">\n",
            escape(provider.id)
        ));
        body.push_str(&hidden("csrf", p.csrf));
        body.push_str(&hidden("request", p.request));
        body.push_str(&format!(
            "<button type=\"submit\" class=\"secondary\">Sign in with {}</button>\n</form>\n",
            escape(provider.name)
        ));
    }
    body.push_str("</div>\n</main>\n");

    document("Sign in", &body)
}

// ---------------------------------------------------------------------------
// Consent
// ---------------------------------------------------------------------------

/// One scope the client asks for.
#[derive(Debug, Clone, Copy)]
pub struct ScopeChoice<'a> {
    /// The scope value sent back in the form (`scope=<name>`).
    pub name: &'a str,
    /// What granting it allows, in plain words.
    pub description: &'a str,
}

/// Data for the consent page.
#[derive(Debug, Clone, Copy)]
pub struct ConsentPage<'a> {
    /// Anti-forgery token, echoed in a hidden field.
    pub csrf: &'a str,
    /// Opaque reference to the pending authorization request.
    pub request: &'a str,
    /// The signed-in user.
    pub user: &'a str,
    /// The client asking for access.
    pub client_name: &'a str,
    /// Host of the client's website; empty if the client did not give one.
    pub client_host: &'a str,
    /// Human name of the protected resource.
    pub resource_name: &'a str,
    /// The resource indicator (URI).
    pub resource: &'a str,
    /// The scopes requested, each offered as a checkbox, checked by default.
    pub scopes: &'a [ScopeChoice<'a>],
}

/// Renders the consent form (`POST /consent` with `csrf`, `request`, one
/// `scope` per granted scope, and `decision=approve|deny`).
pub fn consent_page(p: &ConsentPage<'_>) -> String {
    let client = display_name(p.client_name);
    let mut body = String::new();
    body.push_str("<main>\n<div class=\"card\">\n");
    body.push_str("<p class=\"eyebrow\">Authorization request</p>\n");

    // Who is asking: the name is chosen by the client, the host is what the
    // user can actually check, so the host gets its own distinct style.
    body.push_str(&format!("<h1>{}</h1>\n", escape(client)));
    if p.client_host.is_empty() {
        body.push_str(
            "<p class=\"warning\"><strong>Warning:</strong> \
             This client did not identify its website. \
             Only allow access if you trust it.</p>\n",
        );
        body.push_str(&format!(
            "<p class=\"lede\">This client wants to access <strong>{}</strong></p>\n",
            escape(p.resource_name)
        ));
    } else {
        body.push_str(&format!(
            "<p class=\"lede\"><span class=\"host\">{}</span> wants to access <strong>{}</strong></p>\n",
            escape(p.client_host),
            escape(p.resource_name)
        ));
    }
    body.push_str(&format!(
        "<p>Resource: <code>{}</code></p>\n",
        escape(p.resource)
    ));

    body.push_str("<form method=\"post\" action=\"/consent\">\n");
    body.push_str(&hidden("csrf", p.csrf));
    body.push_str(&hidden("request", p.request));

    // One checkbox per scope. Ids are positional so they never depend on
    // (and never need to escape) the scope names.
    body.push_str("<fieldset>\n<legend>Permissions requested</legend>\n");
    if p.scopes.is_empty() {
        body.push_str("<p class=\"muted\">No specific permissions were requested.</p>\n");
    } else {
        body.push_str("<p class=\"muted\">Uncheck anything you do not want to allow.</p>\n");
        for (i, scope) in p.scopes.iter().enumerate() {
            body.push_str(&format!(
                "<div class=\"scope\">\n\
                 <input type=\"checkbox\" id=\"scope-{i}\" name=\"scope\" value=\"{name}\" checked>\n\
                 <label for=\"scope-{i}\">{description} <code>{name}</code></label>\n\
                 </div>\n",
                name = escape(scope.name),
                description = escape(scope.description),
            ));
        }
    }
    body.push_str("</fieldset>\n");

    body.push_str(
        "<div class=\"actions\">\n\
         <button type=\"submit\" name=\"decision\" value=\"approve\" class=\"primary\">Allow</button>\n\
         <button type=\"submit\" name=\"decision\" value=\"deny\" class=\"secondary\">Deny</button>\n\
         </div>\n",
    );
    body.push_str("</form>\n");

    body.push_str(&format!(
        "<p class=\"muted\">Signed in as <strong>{}</strong></p>\n",
        escape(p.user)
    ));
    body.push_str("</div>\n</main>\n");

    document(&format!("Allow {client} access?"), &body)
}

// ---------------------------------------------------------------------------
// Connected agents (grants)
// ---------------------------------------------------------------------------

/// One standing grant, preformatted for display.
#[derive(Debug, Clone, Copy)]
pub struct GrantView<'a> {
    /// Grant id (base64url); used in the revoke form's action.
    pub id: &'a str,
    /// The client holding the grant.
    pub client_name: &'a str,
    /// Host of the client's website; may be empty.
    pub client_host: &'a str,
    /// The resource indicator (URI).
    pub resource: &'a str,
    /// Granted scopes, space-separated.
    pub scopes: &'a str,
    /// When the grant was made, already formatted for display.
    pub granted_at: &'a str,
}

/// Data for the "Connected agents" page.
#[derive(Debug, Clone, Copy)]
pub struct GrantsPage<'a> {
    /// Anti-forgery token, echoed in every form.
    pub csrf: &'a str,
    /// The signed-in user.
    pub user: &'a str,
    /// The user's standing grants.
    pub grants: &'a [GrantView<'a>],
    /// Outcome of the previous action (e.g. a revocation), if any.
    pub notice: Option<&'a str>,
}

/// Renders the "Connected agents" page: one row per grant, each with its own
/// revoke form (`POST /grants/<id>/revoke`), and a sign-out form
/// (`POST /logout`).
pub fn grants_page(p: &GrantsPage<'_>) -> String {
    let mut body = String::new();

    // Who is signed in, and the way out, before the main content.
    body.push_str("<header class=\"bar\">\n");
    body.push_str(&format!(
        "<p class=\"muted\">Signed in as <strong>{}</strong></p>\n",
        escape(p.user)
    ));
    body.push_str("<form method=\"post\" action=\"/logout\">\n");
    body.push_str(&hidden("csrf", p.csrf));
    body.push_str("<button type=\"submit\" class=\"secondary\">Sign out</button>\n</form>\n");
    body.push_str("</header>\n");

    body.push_str("<main class=\"wide\">\n<h1>Connected agents</h1>\n");
    if let Some(notice) = p.notice {
        body.push_str(&format!(
            "<div class=\"notice\" role=\"status\">{}</div>\n",
            escape(notice)
        ));
    }

    if p.grants.is_empty() {
        body.push_str(
            "<p>No agents have access to your account. When you allow an agent \
             to act for you, it will be listed here.</p>\n",
        );
    } else {
        body.push_str(
            "<p>These agents can act for you on the resources listed. \
             Revoke access for any you no longer use.</p>\n",
        );
        // The wrapper scrolls sideways on narrow screens; it is focusable and
        // named so keyboard users can scroll it too.
        body.push_str(
            "<div class=\"table-wrap\" role=\"region\" aria-labelledby=\"grants-caption\" tabindex=\"0\">\n\
             <table>\n\
             <caption id=\"grants-caption\">Agents with access to your account</caption>\n\
             <thead>\n<tr>\
             <th scope=\"col\">Agent</th>\
             <th scope=\"col\">Resource</th>\
             <th scope=\"col\">Permissions</th>\
             <th scope=\"col\">Granted</th>\
             <th scope=\"col\">Action</th>\
             </tr>\n</thead>\n<tbody>\n",
        );
        for grant in p.grants {
            body.push_str(&grant_row(grant, p.csrf));
        }
        body.push_str("</tbody>\n</table>\n</div>\n");
    }
    body.push_str("</main>\n");

    document("Connected agents", &body)
}

/// One row of the grants table, with its revoke form.
fn grant_row(g: &GrantView<'_>, csrf: &str) -> String {
    let client = escape(display_name(g.client_name));
    let host = if g.client_host.is_empty() {
        "<span class=\"grant-host muted\">No website given</span>".to_owned()
    } else {
        format!(
            "<span class=\"grant-host\"><span class=\"host\">{}</span></span>",
            escape(g.client_host)
        )
    };
    let scopes = {
        let list: Vec<String> = g
            .scopes
            .split_whitespace()
            .map(|s| format!("<code>{}</code>", escape(s)))
            .collect();
        if list.is_empty() {
            "<span class=\"muted\">None</span>".to_owned()
        } else {
            list.join(" ")
        }
    };
    format!(
        "<tr>\n\
         <td><strong>{client}</strong>{host}</td>\n\
         <td><code>{resource}</code></td>\n\
         <td>{scopes}</td>\n\
         <td>{granted_at}</td>\n\
         <td>\n\
         <form method=\"post\" action=\"/grants/{id}/revoke\">\n\
         {csrf}\
         <button type=\"submit\" class=\"danger\">Revoke access to {client}</button>\n\
         </form>\n\
         </td>\n\
         </tr>\n",
        resource = escape(g.resource),
        granted_at = escape(g.granted_at),
        id = escape(g.id),
        csrf = hidden("csrf", csrf),
    )
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Renders an error the user must see here because it cannot safely be sent
/// back to the client (unknown `client_id`, unregistered `redirect_uri`).
pub fn error_page(title: &str, message: &str) -> String {
    let body = format!(
        "<main>\n<div class=\"card\">\n\
         <h1>{title}</h1>\n\
         <p>{message}</p>\n\
         <p class=\"muted\">You can close this page. If the problem persists, \
         contact the developer of the application that sent you here.</p>\n\
         </div>\n</main>\n",
        title = escape(title),
        message = escape(message),
    );
    document(title, &body)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    // -- tiny HTML helpers (enough for markup we generate ourselves) --------

    /// Every start tag `<name ...>` in `html`, as the text between `<` and `>`.
    fn tags<'h>(html: &'h str, name: &str) -> Vec<&'h str> {
        let open = format!("<{name}");
        let mut out = Vec::new();
        let mut rest = html;
        while let Some(start) = rest.find(&open) {
            let after = &rest[start + open.len()..];
            // A real tag name ends here (`<input ` not `<inputs`).
            if after.starts_with([' ', '>', '\n']) {
                let end = after.find('>').expect("unterminated tag");
                out.push(&rest[start..start + open.len() + end]);
            }
            rest = &rest[start + open.len()..];
        }
        out
    }

    /// The value of attribute `name` in a start tag, if present.
    fn attr(tag: &str, name: &str) -> Option<String> {
        let key = format!(" {name}=\"");
        let start = tag.find(&key)? + key.len();
        let len = tag[start..].find('"').expect("unterminated attribute");
        Some(tag[start..start + len].to_owned())
    }

    /// Whether a start tag carries a boolean attribute.
    fn has_flag(tag: &str, name: &str) -> bool {
        tag.split_whitespace().any(|w| w == name)
    }

    /// Every `<form ...>...</form>` element in `html`.
    fn forms(html: &str) -> Vec<&str> {
        let mut out = Vec::new();
        let mut rest = html;
        while let Some(start) = rest.find("<form ") {
            let len = rest[start..].find("</form>").expect("unclosed form") + "</form>".len();
            out.push(&rest[start..start + len]);
            rest = &rest[start + len..];
        }
        out
    }

    /// A hostile value unique to `field`: tag, both quotes, and an ampersand.
    fn evil(field: &str) -> String {
        format!("<script>alert('{field}')</script>\"&x")
    }

    /// `evil(field)` must appear escaped, and its raw form nowhere.
    fn assert_escaped(html: &str, field: &str) {
        let raw = evil(field);
        assert!(
            html.contains(&escape(&raw)),
            "{field}: escaped value missing"
        );
        assert!(!html.contains(&raw), "{field}: raw value present");
        assert!(
            !html.contains(&format!("alert('{field}')")),
            "{field}: unescaped quote"
        );
    }

    // -- sample pages --------------------------------------------------------

    const SCOPES: &[ScopeChoice<'static>] = &[
        ScopeChoice {
            name: "files:read",
            description: "Read your files",
        },
        ScopeChoice {
            name: "files:write",
            description: "Change your files",
        },
    ];

    fn sample_login(error: Option<&str>) -> String {
        login_page(&LoginPage {
            csrf: "csrf-token",
            request: "req-1",
            client_name: "Helper Bot",
            client_host: "bot.example",
            username: "alice",
            error,
            providers: &[],
        })
    }

    fn sample_login_with_providers() -> String {
        login_page(&LoginPage {
            csrf: "csrf-token",
            request: "req-1",
            client_name: "Helper Bot",
            client_host: "bot.example",
            username: "",
            error: None,
            providers: &[
                ProviderButton {
                    id: "corp",
                    name: "Corp SSO",
                },
                ProviderButton {
                    id: "google",
                    name: "<Google>",
                },
            ],
        })
    }

    #[test]
    fn login_offers_one_form_per_provider() {
        let html = sample_login_with_providers();
        let all = forms(&html);
        assert_eq!(all.len(), 3);
        assert!(all[1].starts_with("<form method=\"post\" action=\"/login/oidc/corp\">"));
        assert!(all[1].contains(">Sign in with Corp SSO</button>"));
        assert!(all[2].contains(">Sign in with &lt;Google&gt;</button>"));
        for form in &all[1..] {
            assert!(form.contains("<input type=\"hidden\" name=\"request\" value=\"req-1\">"));
        }
    }

    fn sample_consent(client_host: &str) -> String {
        consent_page(&ConsentPage {
            csrf: "csrf-token",
            request: "req-1",
            user: "alice",
            client_name: "Helper Bot",
            client_host,
            resource_name: "Files API",
            resource: "https://files.example/api",
            scopes: SCOPES,
        })
    }

    const GRANTS: &[GrantView<'static>] = &[
        GrantView {
            id: "Zm9vYmFy_-1",
            client_name: "Helper Bot",
            client_host: "bot.example",
            resource: "https://files.example/api",
            scopes: "files:read files:write",
            granted_at: "2025-01-02 10:00 UTC",
        },
        GrantView {
            id: "YmF6cXV4",
            client_name: "Mail Agent",
            client_host: "",
            resource: "https://mail.example/",
            scopes: "mail:read",
            granted_at: "2025-02-03 11:00 UTC",
        },
    ];

    fn sample_grants(grants: &[GrantView<'_>], notice: Option<&str>) -> String {
        grants_page(&GrantsPage {
            csrf: "csrf-token",
            user: "alice",
            grants,
            notice,
        })
    }

    fn all_samples() -> Vec<(&'static str, String)> {
        vec![
            ("login", sample_login(None)),
            ("login with providers", sample_login_with_providers()),
            (
                "login with error",
                sample_login(Some("Wrong username or password")),
            ),
            ("consent", sample_consent("bot.example")),
            ("consent without host", sample_consent("")),
            ("grants", sample_grants(GRANTS, Some("Access revoked"))),
            ("grants empty", sample_grants(&[], None)),
            (
                "error",
                error_page("Unknown client", "The client_id is not registered."),
            ),
        ]
    }

    // -- escaping ------------------------------------------------------------

    #[test]
    fn escape_replaces_all_five_characters() {
        assert_eq!(
            escape(r#"<a href="x">Tom & Jerry's</a>"#),
            "&lt;a href=&quot;x&quot;&gt;Tom &amp; Jerry&#39;s&lt;/a&gt;"
        );
        assert_eq!(escape("plain é ✓"), "plain é ✓");
        // Already-escaped text is escaped again, never passed through.
        assert_eq!(escape("&amp;"), "&amp;amp;");
    }

    #[test]
    fn login_escapes_every_field() {
        let (csrf, request, name, host, user, error) = (
            evil("csrf"),
            evil("request"),
            evil("client_name"),
            evil("client_host"),
            evil("username"),
            evil("error"),
        );
        let html = login_page(&LoginPage {
            csrf: &csrf,
            request: &request,
            client_name: &name,
            client_host: &host,
            username: &user,
            error: Some(&error),
            providers: &[],
        });
        for field in [
            "csrf",
            "request",
            "client_name",
            "client_host",
            "username",
            "error",
        ] {
            assert_escaped(&html, field);
        }
        assert!(!html.contains("<script"));
    }

    #[test]
    fn consent_escapes_every_field() {
        let (csrf, request, user, name, host, resource_name, resource) = (
            evil("csrf"),
            evil("request"),
            evil("user"),
            evil("client_name"),
            evil("client_host"),
            evil("resource_name"),
            evil("resource"),
        );
        let (scope_name, scope_description) = (evil("scope_name"), evil("scope_description"));
        let scopes = [ScopeChoice {
            name: &scope_name,
            description: &scope_description,
        }];
        let html = consent_page(&ConsentPage {
            csrf: &csrf,
            request: &request,
            user: &user,
            client_name: &name,
            client_host: &host,
            resource_name: &resource_name,
            resource: &resource,
            scopes: &scopes,
        });
        for field in [
            "csrf",
            "request",
            "user",
            "client_name",
            "client_host",
            "resource_name",
            "resource",
            "scope_name",
            "scope_description",
        ] {
            assert_escaped(&html, field);
        }
        assert!(!html.contains("<script"));
    }

    #[test]
    fn grants_escape_every_field() {
        let (csrf, user, notice) = (evil("csrf"), evil("user"), evil("notice"));
        let (id, name, host, resource, scope, at) = (
            evil("id"),
            evil("client_name"),
            evil("client_host"),
            evil("resource"),
            // Scopes are split on whitespace, so the hostile scope has none.
            "<script>alert('scopes')</script>\"&x".to_owned(),
            evil("granted_at"),
        );
        let grants = [GrantView {
            id: &id,
            client_name: &name,
            client_host: &host,
            resource: &resource,
            scopes: &scope,
            granted_at: &at,
        }];
        let html = grants_page(&GrantsPage {
            csrf: &csrf,
            user: &user,
            grants: &grants,
            notice: Some(&notice),
        });
        for field in [
            "csrf",
            "user",
            "notice",
            "id",
            "client_name",
            "client_host",
            "resource",
            "granted_at",
        ] {
            assert_escaped(&html, field);
        }
        assert!(html.contains(&escape(&scope)));
        assert!(!html.contains(&scope));
        assert!(!html.contains("<script"));
    }

    #[test]
    fn error_page_escapes_title_and_message() {
        let html = error_page(&evil("title"), &evil("message"));
        assert_escaped(&html, "title");
        assert_escaped(&html, "message");
        assert!(!html.contains("<script"));
    }

    #[test]
    fn quotes_cannot_break_out_of_attributes() {
        let csrf = "x\" autofocus onfocus=\"steal()";
        let html = login_page(&LoginPage {
            csrf,
            request: "r' onclick='steal()",
            client_name: "c",
            client_host: "h",
            username: "u\" onmouseover=\"steal()",
            error: None,
            providers: &[],
        });
        assert!(html.contains("value=\"x&quot; autofocus onfocus=&quot;steal()\""));
        assert!(html.contains("value=\"r&#39; onclick=&#39;steal()\""));
        for handler in ["onfocus=\"", "onclick='", "onmouseover=\""] {
            assert!(!html.contains(handler), "{handler} escaped its attribute");
        }
        // The hidden field still round-trips to the same token.
        let hidden_csrf = tags(&html, "input")
            .into_iter()
            .find(|t| attr(t, "name").as_deref() == Some("csrf"))
            .unwrap();
        assert_eq!(
            attr(hidden_csrf, "value").unwrap(),
            "x&quot; autofocus onfocus=&quot;steal()"
        );
    }

    // -- structure and accessibility ----------------------------------------

    #[test]
    fn every_page_has_the_accessible_shell_and_no_script() {
        for (name, html) in all_samples() {
            assert!(html.starts_with("<!DOCTYPE html>"), "{name}: doctype");
            assert!(html.contains("<html lang=\"en\">"), "{name}: lang");
            assert!(
                html.contains(
                    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
                ),
                "{name}: viewport"
            );
            assert_eq!(tags(&html, "title").len(), 1, "{name}: one title");
            assert!(
                html.contains(&format!(" - {PRODUCT}</title>")),
                "{name}: title"
            );
            assert_eq!(tags(&html, "main").len(), 1, "{name}: one main");
            assert_eq!(tags(&html, "h1").len(), 1, "{name}: one h1");
            // No JavaScript, no external assets.
            let lower = html.to_lowercase();
            for banned in [
                "<script",
                "javascript:",
                " onclick",
                " onload",
                " onsubmit",
                " onfocus",
                "<link",
                " src=",
                "<img",
                "<iframe",
                "@import",
                "url(",
            ] {
                assert!(!lower.contains(banned), "{name}: contains {banned}");
            }
            // Focus is visibly styled.
            assert!(
                html.contains(":focus{outline:3px solid"),
                "{name}: focus ring"
            );
        }
    }

    #[test]
    fn every_visible_input_has_a_matching_label() {
        for (name, html) in all_samples() {
            let mut ids = Vec::new();
            for input in tags(&html, "input") {
                if attr(input, "type").as_deref() == Some("hidden") {
                    continue;
                }
                let id = attr(input, "id")
                    .unwrap_or_else(|| panic!("{name}: input without id: {input}"));
                assert!(
                    html.contains(&format!("<label for=\"{id}\">")),
                    "{name}: no label for #{id}"
                );
                assert!(!ids.contains(&id), "{name}: duplicate id {id}");
                ids.push(id);
            }
            // And no label points at nothing.
            for label in tags(&html, "label") {
                let target = attr(label, "for").expect("label without for");
                assert!(ids.contains(&target), "{name}: dangling label {target}");
            }
        }
    }

    #[test]
    fn every_form_posts_with_the_csrf_token_and_submit_buttons() {
        for (name, html) in all_samples() {
            for form in forms(&html) {
                let open = tags(form, "form")[0];
                assert_eq!(attr(open, "method").as_deref(), Some("post"), "{name}");
                assert!(attr(open, "action").unwrap().starts_with('/'), "{name}");
                let csrf: Vec<_> = tags(form, "input")
                    .into_iter()
                    .filter(|t| attr(t, "name").as_deref() == Some("csrf"))
                    .collect();
                assert_eq!(csrf.len(), 1, "{name}: one csrf field per form");
                assert_eq!(attr(csrf[0], "type").as_deref(), Some("hidden"));
                assert_eq!(attr(csrf[0], "value").as_deref(), Some("csrf-token"));
            }
            for button in tags(&html, "button") {
                assert_eq!(attr(button, "type").as_deref(), Some("submit"), "{name}");
            }
        }
    }

    #[test]
    fn login_form_fields() {
        let html = sample_login(None);
        let forms = forms(&html);
        assert_eq!(forms.len(), 1);
        assert!(forms[0].starts_with("<form method=\"post\" action=\"/login\">"));
        let inputs = tags(forms[0], "input");
        let by_name = |n: &str| {
            *inputs
                .iter()
                .find(|t| attr(t, "name").as_deref() == Some(n))
                .unwrap_or_else(|| panic!("no {n} field"))
        };
        assert_eq!(attr(by_name("request"), "type").as_deref(), Some("hidden"));
        assert_eq!(attr(by_name("request"), "value").as_deref(), Some("req-1"));
        let username = by_name("username");
        assert_eq!(attr(username, "type").as_deref(), Some("text"));
        assert_eq!(attr(username, "autocomplete").as_deref(), Some("username"));
        assert_eq!(attr(username, "value").as_deref(), Some("alice"));
        assert!(has_flag(username, "required"));
        let password = by_name("password");
        assert_eq!(attr(password, "type").as_deref(), Some("password"));
        assert_eq!(
            attr(password, "autocomplete").as_deref(),
            Some("current-password")
        );
        assert!(attr(password, "value").is_none(), "password never echoed");
        assert!(has_flag(password, "required"));
        assert!(forms[0].contains(">Sign in</button>"));
        assert!(html.contains(
            "Sign in to continue to <strong>Helper Bot</strong> (<span class=\"host\">bot.example</span>)"
        ));
        assert!(!html.contains("role=\"alert\""));
    }

    #[test]
    fn login_error_is_an_alert_tied_to_the_fields() {
        let html = sample_login(Some("Wrong username or password"));
        assert!(html.contains(
            "<div class=\"error\" role=\"alert\" id=\"login-error\">Wrong username or password</div>"
        ));
        for input in tags(&html, "input") {
            if attr(input, "type").as_deref() != Some("hidden") {
                assert_eq!(
                    attr(input, "aria-describedby").as_deref(),
                    Some("login-error")
                );
                assert_eq!(attr(input, "aria-invalid").as_deref(), Some("true"));
            }
        }
    }

    #[test]
    fn consent_lists_every_scope_checked_with_decision_buttons() {
        let html = sample_consent("bot.example");
        let forms = forms(&html);
        assert_eq!(forms.len(), 1);
        let form = forms[0];
        assert!(form.starts_with("<form method=\"post\" action=\"/consent\">"));
        assert!(form.contains("<input type=\"hidden\" name=\"request\" value=\"req-1\">"));

        let boxes: Vec<_> = tags(form, "input")
            .into_iter()
            .filter(|t| attr(t, "type").as_deref() == Some("checkbox"))
            .collect();
        assert_eq!(boxes.len(), SCOPES.len());
        for (input, scope) in boxes.iter().zip(SCOPES) {
            assert_eq!(attr(input, "name").as_deref(), Some("scope"));
            assert_eq!(attr(input, "value").as_deref(), Some(scope.name));
            assert!(
                has_flag(input, "checked"),
                "{} checked by default",
                scope.name
            );
            let id = attr(input, "id").unwrap();
            assert!(form.contains(&format!(
                "<label for=\"{id}\">{} <code>{}</code></label>",
                scope.description, scope.name
            )));
        }
        // Scopes are grouped and named.
        assert!(form.contains("<fieldset>") && form.contains("<legend>"));

        let buttons = tags(form, "button");
        assert_eq!(buttons.len(), 2);
        assert_eq!(attr(buttons[0], "name").as_deref(), Some("decision"));
        assert_eq!(attr(buttons[0], "value").as_deref(), Some("approve"));
        assert_eq!(attr(buttons[1], "name").as_deref(), Some("decision"));
        assert_eq!(attr(buttons[1], "value").as_deref(), Some("deny"));
        assert!(form.contains(">Allow</button>") && form.contains(">Deny</button>"));
    }

    #[test]
    fn consent_shows_who_asks_for_what() {
        let html = sample_consent("bot.example");
        assert!(html.contains("<h1>Helper Bot</h1>"));
        assert!(html.contains(
            "<span class=\"host\">bot.example</span> wants to access <strong>Files API</strong>"
        ));
        assert!(html.contains("<code>https://files.example/api</code>"));
        assert!(html.contains("Signed in as <strong>alice</strong>"));
        assert!(!html.contains("did not identify its website"));
        // The heading comes before the host line.
        assert!(html.find("<h1>").unwrap() < html.find("class=\"host\">bot.example").unwrap());
    }

    #[test]
    fn consent_warns_when_the_client_has_no_website() {
        let html = sample_consent("");
        assert!(html.contains("This client did not identify its website"));
        assert!(html.contains("<strong>Warning:</strong>"));
        assert!(!html.contains("<span class=\"host\"></span>"));
    }

    #[test]
    fn consent_without_scopes_still_renders() {
        let html = consent_page(&ConsentPage {
            csrf: "csrf-token",
            request: "r",
            user: "alice",
            client_name: "",
            client_host: "h.example",
            resource_name: "API",
            resource: "https://api.example/",
            scopes: &[],
        });
        assert!(html.contains("No specific permissions were requested."));
        assert!(html.contains("<h1>An unnamed client</h1>"));
        assert!(tags(&html, "input")
            .iter()
            .all(|t| attr(t, "type").as_deref() == Some("hidden")));
    }

    #[test]
    fn grants_page_has_a_revoke_form_per_grant() {
        let html = sample_grants(GRANTS, None);
        assert!(html.contains("<h1>Connected agents</h1>"));
        assert!(html.contains("<caption id=\"grants-caption\">"));
        assert_eq!(tags(&html, "th").len(), 5);
        assert!(tags(&html, "th")
            .iter()
            .all(|t| attr(t, "scope").as_deref() == Some("col")));
        assert_eq!(tags(&html, "tr").len(), 1 + GRANTS.len());

        let revoke_forms: Vec<_> = forms(&html)
            .into_iter()
            .filter(|f| f.contains("/revoke\""))
            .collect();
        assert_eq!(revoke_forms.len(), GRANTS.len());
        for (form, grant) in revoke_forms.iter().zip(GRANTS) {
            assert!(form.starts_with(&format!(
                "<form method=\"post\" action=\"/grants/{}/revoke\">",
                grant.id
            )));
            assert!(form.contains(&format!(
                "<button type=\"submit\" class=\"danger\">Revoke access to {}</button>",
                grant.client_name
            )));
        }
        for scope in ["files:read", "files:write", "mail:read"] {
            assert!(html.contains(&format!("<code>{scope}</code>")));
        }
        assert!(html.contains("2025-01-02 10:00 UTC"));
        assert!(html.contains("No website given"));
        assert!(!html.contains("role=\"status\""));
    }

    #[test]
    fn grants_page_sign_out_notice_and_empty_state() {
        let html = sample_grants(&[], Some("Access revoked"));
        assert!(html.contains("<div class=\"notice\" role=\"status\">Access revoked</div>"));
        assert!(html.contains("No agents have access to your account."));
        assert!(tags(&html, "table").is_empty());
        let all = forms(&html);
        assert_eq!(all.len(), 1);
        assert!(all[0].starts_with("<form method=\"post\" action=\"/logout\">"));
        assert!(all[0].contains(">Sign out</button>"));
        assert!(html.contains("Signed in as <strong>alice</strong>"));
    }

    #[test]
    fn error_page_shows_title_and_message() {
        let html = error_page("Unknown client", "The client_id is not registered.");
        assert!(html.contains("<title>Unknown client - Mandate</title>"));
        assert!(html.contains("<h1>Unknown client</h1>"));
        assert!(html.contains("<p>The client_id is not registered.</p>"));
        assert!(forms(&html).is_empty());
    }
}
