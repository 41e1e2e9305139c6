//! `mailkeep serve`: the long-running daemon.
//!
//! It loads the configuration, starts the archive writer (group commit)
//! and the configured capture listeners, says what it listens on, and runs
//! until SIGTERM or SIGINT, then drains: no new connections, messages in
//! progress are finished. SIGHUP reloads the configuration: new sessions
//! use the new rules, sessions already open keep the snapshot they started
//! with; a bad file is reported and the previous one kept. Changing a
//! `listen` address needs a restart. An admin's change of `[retention]`
//! from the web is written into the file and reloaded by the same loop.

use crate::cli::ServeArgs;
use crate::config::{self, section, Settings};
use crate::exit::{Exit, Failure};
use mailkeep_capture::filter::{self, dedup::Ledger};
use mailkeep_capture::listen;
use mailkeep_capture::milter::{self, Service, Snapshot};
use mailkeep_capture::policy::FailureCounters;
use mailkeep_destinations::{BatchLimits, GroupCommitter};
use mailkeep_web::retention::{ChangeError, RetentionEditor, Section};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

fn snapshot(settings: &Settings) -> Arc<Snapshot> {
    let m = settings.milter.as_ref();
    Arc::new(Snapshot {
        archiver: Arc::new(if m.is_some_and(|m| m.no_archive) {
            settings.archiver.without_rules()
        } else {
            settings.archiver.clone()
        }),
        on_failure: m.map(|m| m.on_failure).unwrap_or_default(),
        add_header: m.is_some_and(|m| m.add_header),
        spool_dir: settings.spool_dir.clone(),
        spool_threshold: settings.spool_threshold,
        max_message_size: m.and_then(|m| m.max_message_size),
    })
}

fn filter_snapshot(settings: &Settings) -> Option<Arc<filter::Snapshot>> {
    let f = settings.filter.as_ref()?;
    Some(Arc::new(filter::Snapshot {
        archiver: Arc::new(if f.no_archive {
            settings.archiver.without_rules()
        } else {
            settings.archiver.clone()
        }),
        hostname: settings.hostname.clone(),
        relay: f.relay.clone(),
        allowed_clients: f.allowed_clients.clone(),
        max_message_size: f.max_message_size,
        max_recipients: f.max_recipients,
        spool_dir: settings.spool_dir.clone(),
        spool_threshold: settings.spool_threshold,
        command_timeout: f.command_timeout,
        data_timeout: f.data_timeout,
        data_done_timeout: f.data_done_timeout,
        on_failure: f.on_failure,
        ledger: Ledger::new(&f.dedup_dir),
        tls: f.tls.clone(),
    }))
}

/// Raises the open-files limit to its hard maximum: every client
/// connection is a descriptor, and the usual soft limit of 1024 is below
/// what `max_connections` may allow.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_err() {
            tracing::warn!(soft, hard, "could not raise the open-files limit");
        }
    }
}

/// Creates (0700) and checks the directories `serve` keeps named files in:
/// the filter's dedup ledger and the archive-copy queue. A directory another
/// user owns or could swap (a symlink, group- or world-writable, under a
/// world-writable parent without the sticky bit) is refused before anything
/// is written to or pruned from it. One that cannot be made (its parent is
/// missing: `/var/lib/mailkeep` is the administrator's to create, owned by
/// the service user) is only warned about, as before: without a ledger a
/// retried message may be archived twice, and the queue's own writes fail
/// by the failure policy. The spool only ever holds unnamed files
/// (`O_TMPFILE`, or a random name taken with `O_EXCL` and unlinked at once)
/// and is created when first needed.
fn prepare_private_dirs(settings: &Settings) -> Result<(), String> {
    use mailkeep_destinations::private::ensure_private_dir;
    let mut dirs = Vec::new();
    if let Some(f) = &settings.filter {
        dirs.push((f.dedup_dir.as_path(), "filter.dedup_dir"));
    }
    if let Some((f, _)) = &settings.forward {
        dirs.push((f.spool.as_path(), "forward.spool"));
    }
    for (dir, what) in dirs {
        match ensure_private_dir(dir, what) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => tracing::warn!("{e}"),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

/// The pidfile, removed again when serve ends.
struct PidFile(std::path::PathBuf);

impl PidFile {
    /// Writes this process's id to `path` (a temporary file renamed into
    /// place, so a reader never sees half a number).
    fn write(path: &Path) -> Result<PidFile, Failure> {
        let fail = |e: std::io::Error| {
            Failure::new(
                Exit::CANTCREAT,
                format!("--pidfile {}: {e}", path.display()),
            )
        };
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = std::path::PathBuf::from(tmp);
        let _ = std::fs::remove_file(&tmp);
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&tmp)
                .map_err(fail)?;
            writeln!(f, "{}", std::process::id()).map_err(fail)?;
        }
        std::fs::rename(&tmp, path).map_err(fail)?;
        Ok(PidFile(path.to_path_buf()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub fn run(path: Option<&Path>, args: ServeArgs) -> Result<Exit, Failure> {
    raise_fd_limit();
    let mut settings = config::load(path).map_err(|e| Failure::new(Exit::CONFIG, e.to_string()))?;
    prepare_private_dirs(&settings).map_err(|e| Failure::new(Exit::CONFIG, e))?;
    settings
        .attach_store()
        .map_err(|e| Failure::new(Exit::TEMPFAIL, e))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(Exit::SOFTWARE, format!("cannot start the runtime: {e}")))?;
    runtime.block_on(serve(path, settings, args.pidfile.as_deref()))
}

async fn serve(
    path: Option<&Path>,
    settings: Settings,
    pidfile: Option<&Path>,
) -> Result<Exit, Failure> {
    let mut term = signal(SignalKind::terminate()).map_err(sig_err)?;
    let mut int = signal(SignalKind::interrupt()).map_err(sig_err)?;
    let mut hup = signal(SignalKind::hangup()).map_err(sig_err)?;
    crate::audit::record_config(&settings, "start");
    crate::audit::settle_serve_retention(&settings)?;
    println!(
        "mailkeep {} serve: configuration {} ({} rule(s))",
        env!("CARGO_PKG_VERSION"),
        settings.source,
        settings.archiver.rules().rules().len()
    );
    let committer = GroupCommitter::start(BatchLimits::default()).map_err(|e| {
        Failure::new(
            Exit::SOFTWARE,
            format!("cannot start the archive writer: {e}"),
        )
    })?;
    let counters = Arc::new(FailureCounters::default());
    let queue_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let queue_runner = settings
        .archiver
        .options()
        .forward
        .clone()
        .map(|cfg| spawn_queue_runner(cfg, queue_stop.clone()));
    // Expiry once every `expire_every`, with the settings of the latest
    // reload.
    let shared = Arc::new(std::sync::RwLock::new(settings.clone()));
    let expirer = settings
        .expire_every
        .map(|every| spawn_expirer(shared.clone(), every, queue_stop.clone()));
    // Only a store that exists: serve creates none it does not write to.
    let linker = settings
        .store
        .as_ref()
        .is_some_and(|s| s.path.join("catalog.sqlite").exists())
        .then(|| spawn_linker(&settings, queue_stop.clone()))
        .flatten();
    let (settings_tx, settings_rx) = watch::channel(snapshot(&settings));
    // Retention changes from the web, made by this loop between reloads.
    let (change_tx, mut changes) = tokio::sync::mpsc::channel::<RetentionChange>(4);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut servers = tokio::task::JoinSet::new();
    let mut listeners = Vec::new();
    if let Some(m) = &settings.milter {
        let listener = listen::bind(&m.listen, &m.access).await.map_err(|e| {
            Failure::new(
                Exit::OSERR,
                format!("milter: cannot listen on {}: {e}", m.listen),
            )
        })?;
        println!("milter listening on {}", listener.describe());
        listeners.push(mailkeep_web::dashboard::Listener {
            kind: "milter".into(),
            address: listener.describe(),
        });
        let service = Service {
            settings: settings_rx.clone(),
            committer: committer.clone(),
            counters: counters.clone(),
            limits: m.limits,
        };
        let mut stop = stop_rx.clone();
        servers.spawn(async move {
            let shutdown = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            milter::run(listener, service, shutdown).await
        });
    }
    let (filter_tx, filter_rx) = match filter_snapshot(&settings) {
        Some(snap) => {
            let (tx, rx) = watch::channel(snap);
            (Some(tx), Some(rx))
        }
        None => (None, None),
    };
    if let (Some(f), Some(rx)) = (&settings.filter, filter_rx) {
        let listener = listen::bind(&f.listen, &listen::SocketAccess::default())
            .await
            .map_err(|e| {
                Failure::new(
                    Exit::OSERR,
                    format!("filter: cannot listen on {}: {e}", f.listen),
                )
            })?;
        let pruned = rx.borrow().ledger.prune();
        if pruned > 0 {
            tracing::info!(pruned, "old dedup keys removed");
        }
        listeners.push(mailkeep_web::dashboard::Listener {
            kind: if f.relay.is_some() {
                "filter"
            } else {
                "receiver"
            }
            .into(),
            address: listener.describe(),
        });
        match &f.relay {
            Some(r) => println!(
                "SMTP filter listening on {}, relaying to {r}",
                listener.describe()
            ),
            None => println!("SMTP archive receiver listening on {}", listener.describe()),
        }
        let service = filter::Service {
            settings: rx,
            committer: committer.clone(),
            counters: counters.clone(),
            max_connections: f.max_connections,
        };
        let mut stop = stop_rx.clone();
        servers.spawn(async move {
            let shutdown = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            filter::run(listener, service, shutdown).await
        });
    }
    if let Some(w) = &settings.web {
        // One read-only handle per core, up to four: searches run side by
        // side instead of queueing for one catalog connection.
        let readers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4));
        // Opened to write once first: a catalog from before the address
        // index gets it now (readers would read every record instead). A
        // server that may not write the store reads it as it is.
        if let Err(e) = settings.open_store_writable() {
            tracing::warn!(error = %e.message, "web: the store cannot be opened to write; reading it as it is");
        }
        let stores = (0..readers)
            .map(|_| settings.open_store())
            .collect::<Result<Vec<_>, _>>()?;
        let audit = settings.audit_for("web", &stores[0])?.log().clone();
        let listener = tokio::net::TcpListener::bind(w.listen).await.map_err(|e| {
            Failure::new(
                Exit::OSERR,
                format!("web: cannot listen on {}: {e}", w.listen),
            )
        })?;
        let at = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| w.listen.to_string());
        match &w.base_url {
            Some(url) => println!("web interface listening on {at} ({url})"),
            None if w.tls.is_some() => println!("web interface listening on https://{at}/"),
            None => println!("web interface listening on http://{at}/"),
        }
        let app = mailkeep_web::App::new(w.clone(), stores, audit)
            .map_err(|e| {
                Failure::new(
                    Exit::OSERR,
                    format!("web: cannot start the audit writer: {e}"),
                )
            })?
            .with_status(status_source(
                listeners.clone(),
                counters.clone(),
                settings.archiver.options().forward.clone(),
                shared.clone(),
            ))
            .with_retention(Arc::new(Retention {
                changes: change_tx.clone(),
                settings: shared.clone(),
            }));
        let mut stop = stop_rx.clone();
        servers.spawn(async move {
            let shutdown = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            mailkeep_web::run(listener, app, shutdown).await
        });
    }
    let outlets = Outlets {
        settings_tx,
        filter_tx,
        shared: shared.clone(),
    };
    if settings.milter.is_none() && settings.filter.is_none() {
        println!("listening on: nothing (no [milter] or [filter] in the configuration; use `mailkeep pipe`)");
    }
    // Written once every listener is up, so its presence means "serving".
    let _pidfile = pidfile.map(PidFile::write).transpose()?;
    println!("stop with SIGTERM or Ctrl-C; SIGHUP reloads the configuration");
    let mut current = settings;
    loop {
        tokio::select! {
            _ = term.recv() => { println!("SIGTERM: stopping"); break; }
            _ = int.recv() => { println!("SIGINT: stopping"); break; }
            _ = hup.recv() => match reload(path, &current, &outlets) {
                Ok(new) => current = new,
                Err(Reload::Retention(why)) => {
                    tracing::error!("reload refused, keeping the previous configuration: {why}");
                }
                Err(Reload::Config(e)) => for e in &e.0 {
                    tracing::error!("reload failed, keeping the previous configuration: {e}");
                },
            },
            Some(change) = changes.recv() => {
                let outcome = change_retention(&current, &change.text, &outlets);
                let reply = outcome.map(|new| {
                    let in_force = new.retention.describe();
                    current = new;
                    in_force
                });
                let _ = change.reply.send(reply);
            },
            Some(done) = servers.join_next() => {
                // A listener ended on its own: that is a failure to serve.
                let why = match done {
                    Ok(Ok(())) => "ended".to_string(),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                };
                return Err(Failure::new(Exit::SOFTWARE, format!("a listener stopped: {why}")));
            }
        }
    }
    let _ = stop_tx.send(true);
    while servers.join_next().await.is_some() {}
    queue_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(runner) = queue_runner {
        let _ = runner.join();
    }
    if let Some(expirer) = expirer {
        let _ = expirer.join();
    }
    if let Some(linker) = linker {
        let _ = linker.join();
    }
    let stats = committer.stats();
    tracing::info!(
        messages = stats.messages(),
        batches = stats.batches(),
        "archive writer: messages written, in this many group commits"
    );
    println!(
        "mailkeep serve: stopped (configuration {}; not archived: {} retried by the MTA, {} accepted unarchived)",
        current.source,
        counters.tempfailed(),
        counters.accepted_unarchived()
    );
    Ok(Exit::OK)
}

/// Runs expiry five minutes after the start and then every `every`, until
/// `stop`; a failed run is logged and tried again at the next time.
fn spawn_expirer(
    settings: Arc<std::sync::RwLock<Settings>>,
    every: std::time::Duration,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    println!("expiry: every {} h", every.as_secs() / 3600);
    std::thread::spawn(move || {
        let mut next = std::time::Instant::now() + std::time::Duration::from_secs(300);
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            if std::time::Instant::now() < next {
                std::thread::sleep(std::time::Duration::from_secs(1));
                continue;
            }
            next = std::time::Instant::now() + every;
            let s = settings.read().unwrap_or_else(|e| e.into_inner()).clone();
            match super::expire::run_expiry(&s, "serve", false) {
                Ok(e) => {
                    let r = e.report.unwrap_or_default();
                    tracing::info!(
                        removed = r.deliveries.len(),
                        messages = r.messages,
                        bytes_freed = r.compacted.freed,
                        kept_by_hold = e.kept_by_hold.len(),
                        "expiry ran"
                    );
                }
                Err(f) => tracing::error!("expiry failed (tried again later): {}", f.message),
            }
        }
    })
}

/// Where a reload puts the settings it loaded.
struct Outlets {
    settings_tx: watch::Sender<Arc<Snapshot>>,
    filter_tx: Option<watch::Sender<Arc<filter::Snapshot>>>,
    shared: Arc<std::sync::RwLock<Settings>>,
}

/// Why a reload kept the previous configuration.
enum Reload {
    /// The configuration does not load.
    Config(config::ConfigErrors),
    /// Its retention is refused (a locked one only lengthens).
    Retention(String),
}

impl std::fmt::Display for Reload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reload::Config(e) => {
                let all: Vec<String> = e.0.iter().map(ToString::to_string).collect();
                f.write_str(&all.join("; "))
            }
            Reload::Retention(why) => f.write_str(why),
        }
    }
}

/// Loads the configuration at `path` again and puts it in force (SIGHUP,
/// and a retention change from the web), or keeps `current` and says why.
fn reload(path: Option<&Path>, current: &Settings, out: &Outlets) -> Result<Settings, Reload> {
    let new = config::load(path)
        .and_then(|new| keep_store(current, new))
        .and_then(|new| match prepare_private_dirs(&new) {
            Ok(()) => Ok(new),
            Err(message) => Err(config::ConfigError {
                source: new.source.clone(),
                line: None,
                message,
            }
            .into()),
        })
        .map_err(Reload::Config)?;
    crate::audit::settle_serve_retention(&new).map_err(|f| Reload::Retention(f.message))?;
    if new.milter.as_ref().map(|m| &m.listen) != current.milter.as_ref().map(|m| &m.listen) {
        tracing::warn!("milter.listen changed: restart mailkeep to listen on the new address");
    }
    let _ = out.settings_tx.send(snapshot(&new));
    if let (Some(tx), Some(snap)) = (&out.filter_tx, filter_snapshot(&new)) {
        let _ = tx.send(snap);
    }
    tracing::info!(source = %new.source,
        rules = new.archiver.rules().rules().len(), "configuration reloaded");
    crate::audit::record_config(&new, "reload");
    *out.shared.write().unwrap_or_else(|e| e.into_inner()) = new.clone();
    Ok(new)
}

/// A retention change from the web, for the main loop.
struct RetentionChange {
    text: String,
    reply: std::sync::mpsc::Sender<Result<Value, ChangeError>>,
}

/// The web's view of this server's `[retention]` section.
struct Retention {
    changes: tokio::sync::mpsc::Sender<RetentionChange>,
    settings: Arc<std::sync::RwLock<Settings>>,
}

impl Retention {
    fn file(&self) -> Option<PathBuf> {
        match &self
            .settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .source
        {
            config::Source::File(p) => Some(p.clone()),
            config::Source::Embedded => None,
        }
    }
}

impl RetentionEditor for Retention {
    fn current(&self) -> Result<Section, String> {
        let file = self
            .file()
            .ok_or_else(|| "this server runs on the embedded default configuration".to_string())?;
        let text = std::fs::read_to_string(&file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        Ok(Section {
            file: file.display().to_string(),
            text: section::retention_section(&text)?,
        })
    }

    fn apply(&self, text: &str) -> Result<Value, ChangeError> {
        let (reply, answer) = std::sync::mpsc::channel();
        self.changes
            .blocking_send(RetentionChange {
                text: text.to_string(),
                reply,
            })
            .map_err(|_| ChangeError::Failed("the server is stopping".into()))?;
        answer
            .recv()
            .map_err(|_| ChangeError::Failed("the server is stopping".into()))?
    }
}

/// Puts `text` in place of the `[retention]` section of `current`'s file:
/// the whole configuration checked as it would load, and the retention as
/// a reload would check it (recording nothing), before the file is
/// written; then reloaded. A reload that refuses it after all (the audit
/// log changed in between) puts the old file back.
fn change_retention(
    current: &Settings,
    text: &str,
    out: &Outlets,
) -> Result<Settings, ChangeError> {
    let config::Source::File(file) = &current.source else {
        return Err(ChangeError::Refused(
            "this server runs on the embedded default configuration: there is no file to change"
                .into(),
        ));
    };
    let old = std::fs::read_to_string(file)
        .map_err(|e| ChangeError::Failed(format!("cannot read {}: {e}", file.display())))?;
    let new_text = section::with_retention_section(&old, text).map_err(ChangeError::Refused)?;
    let candidate = config::parse(&new_text, config::Source::File(file.clone()))
        .map_err(|e| ChangeError::Refused(Reload::Config(e).to_string()))?;
    crate::audit::check_serve_retention(&candidate).map_err(|f| ChangeError::Refused(f.message))?;
    section::replace_file(file, &new_text)
        .map_err(|e| ChangeError::Failed(format!("cannot write {}: {e}", file.display())))?;
    match reload(Some(file), current, out) {
        Ok(new) => {
            tracing::info!(file = %file.display(), "retention changed from the web");
            Ok(new)
        }
        Err(why) => {
            if let Err(e) = section::replace_file(file, &old) {
                tracing::error!("the previous {} could not be put back: {e}", file.display());
            }
            Err(ChangeError::Refused(why.to_string()))
        }
    }
}

/// Messages whose conversation links one step reads: a few tenths of a
/// second of work, so commits wait for the writers' lock no longer than
/// that.
const LINK_STEP: usize = 500;

/// Reads the conversation links of messages stored before the catalog kept
/// them (see `Store::link_older_messages`), a step at a time with a pause
/// between, until none are left or `stop`; a failed step is logged and
/// tried again a minute later. `None` when there is nothing to read.
fn spawn_linker(
    settings: &Settings,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Option<std::thread::JoinHandle<()>> {
    // The archive writer's handle when the rules write to the store;
    // otherwise one of its own.
    let store = match settings.archiver.options().store.clone() {
        Some(store) => store,
        None => match settings.open_store_writable() {
            Ok(store) => Arc::new(store),
            Err(f) => {
                tracing::warn!(
                    "conversation links: the store cannot be opened to write: {}",
                    f.message
                );
                return None;
            }
        },
    };
    // Nothing pending (or not known): nothing to do, and nothing counted.
    store.threads_pending().ok().flatten()?;
    let left = store.totals().map(|t| t.unlinked).unwrap_or(0);
    println!("conversation links: reading those of {left} older message(s) in the background");
    Some(std::thread::spawn(move || {
        let started = std::time::Instant::now();
        let (mut read, mut unreadable) = (0usize, 0usize);
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            match store.link_older_messages(LINK_STEP) {
                Ok(step) => {
                    read += step.read;
                    unreadable += step.unreadable;
                    if step.pending.is_none() {
                        tracing::info!(
                            read,
                            unreadable,
                            seconds = started.elapsed().as_secs(),
                            "conversation links of the older messages read"
                        );
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => {
                    tracing::error!(
                        "conversation links (tried again in a minute): {}",
                        mailkeep_capture::error_chain(&e)
                    );
                    for _ in 0..60 {
                        if stop.load(std::sync::atomic::Ordering::Relaxed) {
                            return;
                        }
                        std::thread::sleep(std::time::Duration::from_secs(1));
                    }
                }
            }
        }
    }))
}

/// Delivers spooled archive copies: a pass every second (each copy is
/// tried when its back-off allows), until `stop`. The relay settings are
/// the ones at start; changing them needs a restart.
/// What the dashboard shows of this server: its capture listeners, its
/// failure counters, the queue of archive copies and the retention in
/// force, read when asked.
fn status_source(
    listeners: Vec<mailkeep_web::dashboard::Listener>,
    counters: Arc<FailureCounters>,
    forward: Option<Arc<mailkeep_destinations::forward::ForwardConfig>>,
    settings: Arc<std::sync::RwLock<Settings>>,
) -> mailkeep_web::dashboard::StatusSource {
    use mailkeep_web::dashboard::{QueueState, ServerStatus};
    Arc::new(move || ServerStatus {
        // As of the latest reload.
        retention: Some(
            settings
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .retention
                .describe(),
        ),
        expire_every_seconds: settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .expire_every
            .map(|d| d.as_secs()),
        listeners: listeners.clone(),
        tempfailed: counters.tempfailed(),
        accepted_unarchived: counters.accepted_unarchived(),
        queue: forward.as_ref().map(|cfg| {
            match mailkeep_destinations::forward::Queue::new(&cfg.spool).list() {
                Ok(entries) => {
                    let now = chrono::Utc::now().timestamp().max(0) as u64;
                    QueueState {
                        entries: entries.len() as u64,
                        bytes: entries.iter().map(|e| e.size).sum(),
                        oldest_seconds: entries
                            .iter()
                            .map(|e| now.saturating_sub(e.meta.created))
                            .max(),
                        stuck: entries.iter().filter(|e| e.stuck(cfg.max_age)).count() as u64,
                        error: None,
                    }
                }
                Err(e) => QueueState {
                    error: Some(format!("{}: {e}", cfg.spool.display())),
                    ..QueueState::default()
                },
            }
        }),
    })
}

fn spawn_queue_runner(
    cfg: Arc<mailkeep_destinations::forward::ForwardConfig>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    println!(
        "archive copies: spool {}, relay {}",
        cfg.spool.display(),
        cfg.relay.addr
    );
    std::thread::spawn(move || {
        let queue = mailkeep_destinations::forward::Queue::new(&cfg.spool);
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            if let Err(e) = queue.run_once(&cfg, false) {
                tracing::error!("archive copy queue {}: {e}", cfg.spool.display());
            }
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    })
}

/// The reloaded settings use the store already open when its path did not
/// change (one writer per store per process); otherwise the new one is
/// opened, and a failure keeps the previous configuration.
fn keep_store(current: &Settings, mut new: Settings) -> Result<Settings, config::ConfigErrors> {
    let same = match (&current.store, &new.store) {
        (Some(a), Some(b)) => a.path == b.path,
        _ => false,
    };
    let source = new.source.clone();
    let fail = |message: String| {
        config::ConfigErrors::from(config::ConfigError {
            source: source.clone(),
            line: None,
            message,
        })
    };
    if same && current.archiver.options().store.is_some() {
        let forward = new.forward_config().map_err(fail)?;
        new.archiver
            .set_store(current.archiver.options().store.clone());
        new.archiver.set_forward(forward.map(Arc::new));
    } else if let Err(e) = new.attach_store() {
        return Err(fail(e));
    }
    Ok(new)
}

fn sig_err(e: std::io::Error) -> Failure {
    Failure::new(
        Exit::SOFTWARE,
        format!("cannot install signal handlers: {e}"),
    )
}
