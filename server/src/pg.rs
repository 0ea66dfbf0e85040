//! A private PostgreSQL cluster, started and stopped by fleetpilot itself.
//!
//! Used when no `DATABASE_URL` is given (the demo, the tests, a single-box trial). The cluster lives in a
//! data directory of ours and listens only on a Unix socket inside it (no TCP at all: `listen_addresses`
//! is empty, host logins are rejected in `pg_hba.conf`, and the socket is mode 0700 in a mode-0700
//! directory, so only the cluster's own user and root can connect; an old cluster initialised with
//! `trust` on 127.0.0.1 is safe too because nothing listens there). It runs as an
//! unprivileged user because `initdb` refuses root. The postmaster is started from a dedicated thread with a
//! parent-death signal, so even a SIGKILLed fleetpilot never leaves an orphaned server behind; a normal stop
//! is a fast shutdown (SIGINT) that waits for the server to exit.

use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, User, chown, geteuid};

/// Database created inside the private cluster.
pub const DATABASE: &str = "fleetpilot";
/// Superuser name of the private cluster.
pub const SUPERUSER: &str = "fleetpilot";

/// Why the private cluster could not be started.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The server binaries are not installed.
    #[error(
        "PostgreSQL server binaries (initdb, postgres) not found in /usr/lib/postgresql/*/bin or $FLEETPILOT_PG_BIN.\n\
         Install them with:\n    sudo apt-get update && sudo apt-get install -y postgresql\n\
         or point fleetpilot at an existing server with DATABASE_URL=postgres://user:pass@host:port/db"
    )]
    BinariesMissing,
    /// A command failed.
    #[error("{what} failed: {detail}")]
    Command {
        /// What was run.
        what: String,
        /// Its output or error.
        detail: String,
    },
    /// The data directory is in use by another server.
    #[error(
        "the data directory {dir} is in use by another PostgreSQL (postmaster.pid names pid {pid}); stop that fleetpilot first or choose another --data-dir"
    )]
    InUse {
        /// Data directory.
        dir: String,
        /// Its postmaster's pid.
        pid: i32,
    },
    /// The server did not become ready.
    #[error("PostgreSQL did not accept connections within {0:?}; see {1}")]
    NotReady(Duration, String),
    /// Filesystem trouble.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

/// Settings for [`PrivatePostgres::start`].
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Where the cluster's files live (created if missing, reused if present).
    pub data_dir: PathBuf,
    /// Trade durability for speed (fsync off): for throwaway test clusters only.
    pub ephemeral: bool,
}

/// A running private cluster; stopped on [`PrivatePostgres::stop`] or drop.
pub struct PrivatePostgres {
    data_dir: PathBuf,
    port: u16,
    pid: i32,
    exited: mpsc::Receiver<()>,
    stopped: bool,
}

impl std::fmt::Debug for PrivatePostgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivatePostgres").field("data_dir", &self.data_dir).field("port", &self.port).finish()
    }
}

/// Finds the directory holding `initdb` and `postgres`: `$FLEETPILOT_PG_BIN`, else the newest
/// `/usr/lib/postgresql/<major>/bin` (Debian's layout), else `$PATH`.
pub fn find_bin_dir() -> Option<PathBuf> {
    let has = |d: &Path| d.join("initdb").is_file() && d.join("postgres").is_file();
    if let Ok(d) = std::env::var("FLEETPILOT_PG_BIN") {
        let d = PathBuf::from(d);
        return has(&d).then_some(d);
    }
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            has(&bin).then_some((major, bin))
        })
        .collect();
    debian.sort();
    if let Some((_, bin)) = debian.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).find(|d| has(d)))
}

/// A TCP port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The account the cluster runs as: ourselves, or `nobody` when we are root.
fn run_as() -> Option<User> {
    if geteuid().is_root() { User::from_name("nobody").ok().flatten() } else { None }
}

/// Whether `user` can reach `dir` (every ancestor searchable by it).
fn reachable_by(dir: &Path, user: &User) -> bool {
    dir.ancestors().skip(1).all(|a| match std::fs::metadata(a) {
        Ok(m) => {
            let mode = m.permissions().mode();
            mode & 0o001 != 0 || (m.uid() == user.uid.as_raw() && mode & 0o100 != 0)
        }
        Err(_) => true, // does not exist yet: we create it below with a searchable mode
    })
}

impl PrivatePostgres {
    /// Creates the cluster if needed and starts it; returns once it accepts connections and the
    /// `fleetpilot` database exists.
    pub fn start(opts: &PgOptions) -> Result<Self, PgError> {
        let bin = find_bin_dir().ok_or(PgError::BinariesMissing)?;
        let user = run_as();
        let mut data_dir = absolute(&opts.data_dir)?;
        if let Some(u) = &user
            && !reachable_by(&data_dir, u)
        {
            // e.g. a checkout under /root (mode 0700): `nobody` cannot enter it, so keep the cluster in a
            // per-project directory under the system temp dir instead.
            let alt = std::env::temp_dir()
                .join(format!("fleetpilot-pg-{:016x}", fnv(data_dir.as_os_str().as_encoded_bytes())));
            tracing::info!(wanted = %data_dir.display(), using = %alt.display(), "the PostgreSQL user `nobody` cannot reach the data directory; using a directory it can reach");
            data_dir = alt;
        }
        let log_path = data_dir.with_extension("log");
        std::fs::create_dir_all(&data_dir).map_err(|e| PgError::Io(format!("create {}", data_dir.display()), e))?;
        std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| PgError::Io(format!("chmod {}", data_dir.display()), e))?;
        if let Some(u) = &user {
            chown(&data_dir, Some(u.uid), Some(u.gid))
                .map_err(|e| PgError::Io(format!("chown {}", data_dir.display()), e.into()))?;
        }
        if !data_dir.join("PG_VERSION").exists() {
            let mut cmd = Command::new(bin.join("initdb"));
            cmd.arg("-D")
                .arg(&data_dir)
                .args(["-U", SUPERUSER, "--auth-local=trust", "--auth-host=reject"])
                .args(["--encoding=UTF8", "--locale=C"]);
            if opts.ephemeral {
                cmd.arg("--no-sync");
            }
            run(cmd, user.as_ref(), "initdb")?;
        }
        check_not_in_use(&data_dir)?;

        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| PgError::Io(format!("open {}", log_path.display()), e))?;
        let log2 = log.try_clone().map_err(|e| PgError::Io("dup log".into(), e))?;
        let mut last_err = None;
        for _attempt in 0..5 {
            let port = free_port().map_err(|e| PgError::Io("pick a free port".into(), e))?;
            let mut cmd = Command::new(bin.join("postgres"));
            cmd.arg("-D").arg(&data_dir).arg("-p").arg(port.to_string());
            // The port only names the socket file (`.s.PGSQL.<port>`); nothing listens on TCP.
            cmd.args(["-c", "listen_addresses=", "-c", "max_connections=200", "-c", "unix_socket_permissions=0700"]);
            cmd.arg("-c").arg(format!("unix_socket_directories={}", data_dir.display()));
            if opts.ephemeral {
                cmd.args(["-c", "fsync=off", "-c", "full_page_writes=off", "-c", "synchronous_commit=off"]);
            }
            cmd.stdin(Stdio::null())
                .stdout(Stdio::from(log.try_clone().map_err(|e| PgError::Io("dup log".into(), e))?));
            cmd.stderr(Stdio::from(log2.try_clone().map_err(|e| PgError::Io("dup log".into(), e))?));
            let (pid, exited) = spawn_supervised(cmd, user.as_ref())?;
            match wait_ready(&bin, &data_dir, port, &exited, Duration::from_secs(60)) {
                Ok(()) => {
                    let pg = PrivatePostgres { data_dir: data_dir.clone(), port, pid, exited, stopped: false };
                    tracing::info!(port, data_dir = %data_dir.display(), "private PostgreSQL is up");
                    return Ok(pg);
                }
                Err(e) => {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    let _ = exited.recv_timeout(Duration::from_secs(10));
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| PgError::NotReady(Duration::from_secs(60), log_path.display().to_string())))
            .map_err(|e| match e {
                PgError::NotReady(d, _) => PgError::NotReady(d, log_path.display().to_string()),
                other => other,
            })
    }

    /// Port number of the cluster's Unix socket (`<data_dir>/.s.PGSQL.<port>`); there is no TCP listener.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Data directory actually used.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Connection URL of the `fleetpilot` database.
    pub fn url(&self) -> String {
        self.url_for(DATABASE)
    }

    /// Connection URL of another database in the cluster (over its Unix socket).
    pub fn url_for(&self, db: &str) -> String {
        socket_url(&self.data_dir, self.port, db)
    }

    /// Fast shutdown: clients are disconnected, the server exits, the data stays consistent.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let _ = kill(Pid::from_raw(self.pid), Signal::SIGINT);
        if self.exited.recv_timeout(Duration::from_secs(20)).is_err() {
            tracing::warn!("PostgreSQL did not stop within 20 s; killing it");
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
            let _ = self.exited.recv_timeout(Duration::from_secs(5));
        }
        tracing::info!("private PostgreSQL stopped");
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

fn absolute(p: &Path) -> Result<PathBuf, PgError> {
    std::path::absolute(p).map_err(|e| PgError::Io(format!("resolve {}", p.display()), e))
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

fn as_user(cmd: &mut Command, user: Option<&User>) {
    if let Some(u) = user {
        cmd.uid(u.uid.as_raw()).gid(u.gid.as_raw());
        // `nobody` has no home; keep tools from trying to read root's files.
        cmd.env("HOME", "/tmp");
    }
}

fn run(mut cmd: Command, user: Option<&User>, what: &str) -> Result<(), PgError> {
    as_user(&mut cmd, user);
    let out = cmd.output().map_err(|e| PgError::Command { what: what.into(), detail: e.to_string() })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(PgError::Command {
            what: what.into(),
            detail: format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        })
    }
}

/// Refuses to start over a live postmaster; a stale pid file (crashed run) is left for postgres to handle.
fn check_not_in_use(dir: &Path) -> Result<(), PgError> {
    let Ok(text) = std::fs::read_to_string(dir.join("postmaster.pid")) else { return Ok(()) };
    let Some(pid) = text.lines().next().and_then(|l| l.trim().parse::<i32>().ok()) else { return Ok(()) };
    let alive = Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres");
    if alive { Err(PgError::InUse { dir: dir.display().to_string(), pid }) } else { Ok(()) }
}

/// Spawns the postmaster from a thread that lives exactly as long as the child: the child's parent-death
/// signal fires when that thread (or the whole process) goes away. Returns the pid and a channel that
/// receives once the child has exited.
fn spawn_supervised(mut cmd: Command, user: Option<&User>) -> Result<(i32, mpsc::Receiver<()>), PgError> {
    as_user(&mut cmd, user);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent; this runs in the forked child
    // after the uid change (which would otherwise clear the parent-death signal).
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGQUIT).map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let (pid_tx, pid_rx) = mpsc::channel();
    let (exit_tx, exit_rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("pg-supervisor".into())
        .spawn(move || match cmd.spawn() {
            Ok(mut child) => {
                let _ = pid_tx.send(Ok(child.id() as i32));
                let _ = child.wait();
                let _ = exit_tx.send(());
            }
            Err(e) => {
                let _ = pid_tx.send(Err(e));
            }
        })
        .map_err(|e| PgError::Io("spawn supervisor thread".into(), e))?;
    let pid = pid_rx
        .recv()
        .map_err(|_| PgError::Command { what: "postgres".into(), detail: "supervisor thread died".into() })?
        .map_err(|e| PgError::Command { what: "postgres".into(), detail: e.to_string() })?;
    Ok((pid, exit_rx))
}

/// `postgres://fleetpilot@localhost:<port>/<db>?host=<socket dir>`: sqlx and libpq take a `host` starting
/// with `/` as the directory of the Unix socket.
pub fn socket_url(socket_dir: &Path, port: u16, db: &str) -> String {
    let dir: String = socket_dir
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .map(|&b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("postgres://{SUPERUSER}@localhost:{port}/{db}?host={dir}")
}

/// Waits until the server accepts connections on its socket (`pg_isready`; an existing socket alone still
/// answers "the database system is starting up" during recovery).
fn wait_ready(
    bin: &Path,
    socket_dir: &Path,
    port: u16,
    exited: &mpsc::Receiver<()>,
    timeout: Duration,
) -> Result<(), PgError> {
    let start = Instant::now();
    let isready = bin.join("pg_isready");
    let socket = socket_dir.join(format!(".s.PGSQL.{port}"));
    while start.elapsed() < timeout {
        if exited.try_recv().is_ok() {
            return Err(PgError::Command { what: "postgres".into(), detail: "exited during start-up".into() });
        }
        if socket.exists() {
            let ready = if isready.is_file() {
                Command::new(&isready)
                    .arg("-q")
                    .arg("-h")
                    .arg(socket_dir)
                    .args(["-p", &port.to_string(), "-U", SUPERUSER, "-d", "postgres"])
                    .status()
                    .is_ok_and(|s| s.success())
            } else {
                true // the caller's connection retries cover the start-up window
            };
            if ready {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(PgError::NotReady(timeout, String::new()))
}

/// Creates `db` in the cluster at `admin_url` if it does not exist.
pub async fn ensure_database(admin_url: &str, db: &str) -> Result<(), sqlx::Error> {
    use sqlx::Connection as _;
    let mut conn = connect_retrying(admin_url, Duration::from_secs(30)).await?;
    let exists: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1").bind(db).fetch_optional(&mut conn).await?;
    if exists.is_none() {
        let sql = format!("CREATE DATABASE \"{}\"", db.replace('"', "\"\""));
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await?;
    }
    conn.close().await
}

/// Drops `db` (closing its sessions) and creates it empty, in the cluster at `admin_url`: a fresh database
/// per demo run.
pub async fn recreate_database(admin_url: &str, db: &str) -> Result<(), sqlx::Error> {
    use sqlx::Connection as _;
    let mut conn = connect_retrying(admin_url, Duration::from_secs(30)).await?;
    let name = format!("\"{}\"", db.replace('"', "\"\""));
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))).execute(&mut conn).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await?;
    conn.close().await
}

/// Connects, retrying while the server is still starting up.
pub async fn connect_retrying(url: &str, timeout: Duration) -> Result<sqlx::PgConnection, sqlx::Error> {
    use sqlx::Connection as _;
    let start = Instant::now();
    loop {
        match sqlx::PgConnection::connect(url).await {
            Ok(c) => return Ok(c),
            Err(e) if start.elapsed() < timeout => {
                tracing::debug!(error = %e, "waiting for PostgreSQL");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    }
}
