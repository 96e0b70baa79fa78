//! Nodes of ctsd on one PostgreSQL database (`store.backend = "postgres"`):
//! a throwaway server per test ([`cts_testpg::TestPg`]), each node with a
//! data directory and a port of its own.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cts_testpg::TestPg;

use std::collections::HashSet;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};

use crate::support::{batch, ids, now_ms, trace, trace_with_id, Builder, TestServer};
use crate::transfer::wait_for;

/// 32 bytes in base64.
const SECRET_KEY: &str = "Y3RzLXRlc3QtY2x1c3Rlci1zZWNyZXQta2V5LTMyYiE=";

/// One database that several nodes share.
pub struct Cluster {
    /// The server; stopped when dropped.
    pg: TestPg,
    pub url: String,
    /// Settings of every node beside the database's.
    extra: Vec<(String, String)>,
}

impl Cluster {
    pub fn start() -> Cluster {
        let pg = TestPg::start();
        let url = pg.url();
        Cluster {
            pg,
            url,
            extra: Vec::new(),
        }
    }

    /// Every node of this cluster gets the setting `key=value`.
    pub fn with(mut self, key: &str, value: &str) -> Cluster {
        self.extra.push((key.into(), value.into()));
        self
    }

    /// What psql prints for `query` on the cluster's database.
    pub fn sql(&self, query: &str) -> String {
        self.pg.sql(query)
    }

    /// The settings of a node of this cluster.
    pub fn env(&self) -> Vec<(String, String)> {
        let shared = [
            ("CTS_STORE_BACKEND", "postgres"),
            ("CTS_STORE_POSTGRES_URL", &self.url),
            // The same on every node: it encrypts the secrets they share.
            ("CTS_STORE_SECRET_KEY", SECRET_KEY),
        ];
        shared
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .chain(self.extra.iter().cloned())
            .collect()
    }

    /// A node of this cluster, to start.
    pub fn node(&self) -> Builder {
        self.env()
            .into_iter()
            .fold(TestServer::builder(), |b, (k, v)| b.env(&k, &v))
    }

    /// Another node, started: it shares the first node's identities, so
    /// it is given the first's `bootstrap.json` (the admin's credentials)
    /// in a data directory of its own.
    pub fn another(&self, first: &TestServer, root: &std::path::Path) -> TestServer {
        self.another_with(first, root, |b| b)
    }

    /// [`Cluster::another`] with more settings (`with` adds them).
    pub fn another_with(
        &self,
        first: &TestServer,
        root: &std::path::Path,
        with: impl FnOnce(Builder) -> Builder,
    ) -> TestServer {
        let data = root.join("data");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&data)
            .unwrap();
        let bytes = std::fs::read(first.data_dir.join("bootstrap.json")).unwrap();
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(data.join("bootstrap.json"))
            .unwrap();
        std::io::Write::write_all(&mut file, &bytes).unwrap();
        with(self.node()).root(root).start()
    }

    /// Runs `ctsd ARGS --data-dir TMP` with this cluster's settings and
    /// `env`; kills it if it has not ended within a minute.
    pub fn ctsd(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let data = tempfile::tempdir().unwrap();
        let mut all: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        all.extend(["--data-dir".as_ref(), data.path().as_os_str()]);
        self.run(&all, env)
    }

    /// Runs `ctsd ARGS` with this cluster's settings and `env`; kills it
    /// if it has not ended within a minute.
    pub fn run(&self, args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ctsd"));
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, _) in std::env::vars() {
            if k.starts_with("CTS_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(self.env()).envs(env.iter().copied());
        let mut child = cmd.spawn().expect("ctsd runs");
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.wait_with_output().unwrap()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn migrate_applies_every_schema_once_and_serve_without_auto_migrate_needs_it() {
    let cluster = Cluster::start();
    let manual = [("CTS_STORE_AUTO_MIGRATE", "false")];

    // A fresh database and auto_migrate off: the start is refused, naming
    // the command that fixes it.
    let refused = cluster.ctsd(&["serve", "--listen", "127.0.0.1:0"], &manual);
    let stderr = text(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains("ctsd migrate"), "{stderr}");

    let first = cluster.ctsd(&["migrate"], &[]);
    let stdout = text(&first.stdout);
    assert!(first.status.success(), "{stdout}{}", text(&first.stderr));
    for ledger in [
        "cts_schema_migrations",
        "cts_consumer_migrations",
        "identity_schema_migrations",
    ] {
        assert!(
            stdout.contains(&format!("{ledger}: applied migration 1")),
            "{stdout}"
        );
    }
    let second = cluster.ctsd(&["migrate"], &[]);
    let stdout = text(&second.stdout);
    assert!(second.status.success(), "{stdout}{}", text(&second.stderr));
    assert!(!stdout.contains("applied"), "{stdout}");
    assert!(
        stdout.contains("cts_consumer_migrations: current"),
        "{stdout}"
    );

    let node = cluster
        .node()
        .env("CTS_STORE_AUTO_MIGRATE", "false")
        .start();
    node.report("main", &[crate::support::trace(crate::support::now_ms())]);
}

/// Every trace id of the bootstrap project that `node` answers.
fn all_ids(node: &TestServer) -> HashSet<String> {
    ids(&node.query_all("main", &[])).into_iter().collect()
}

#[test]
fn nodes_share_traces_a_killed_node_loses_nothing_acknowledged_and_a_new_node_serves_at_once() {
    let cluster = Cluster::start();
    let a = cluster.node().start();
    let roots = tempfile::tempdir().unwrap();
    let mut b = cluster.another(&a, &roots.path().join("b"));

    // Reported through one node, read through the other.
    let first = a.report("main", &[trace(now_ms())]);
    let id = first["trace_ids"][0].as_str().unwrap().to_string();
    assert_eq!(ids(&b.by_id("main", &id)), std::slice::from_ref(&id));

    // kill -9 of b while a writer reports through it.
    let signer = b.signer();
    let path = format!("/v3/{}/traces", a.admin.project_id);
    let writer = std::thread::spawn(move || {
        let client = reqwest::blocking::Client::new();
        let mut acked = Vec::new();
        loop {
            let body = serde_json::to_vec(&batch(&[trace(now_ms()), trace(now_ms())])).unwrap();
            match signer.try_send(&client, "POST", &path, Some(("application/json", body))) {
                Ok(answer) if answer.status == 201 => acked.extend(
                    answer.body["trace_ids"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|i| i.as_str().unwrap().to_string()),
                ),
                _ => return acked,
            }
        }
    });
    std::thread::sleep(Duration::from_millis(1500));
    b.kill();
    let acked = writer.join().unwrap();
    assert!(!acked.is_empty());
    let on_a = all_ids(&a);
    let lost: Vec<_> = acked.iter().filter(|i| !on_a.contains(*i)).collect();
    assert!(lost.is_empty(), "acknowledged, then lost: {lost:?}");
    assert!(on_a.contains(&id));

    // A node added now answers at once, all of it.
    let c = cluster.another(&a, &roots.path().join("c"));
    let on_c = all_ids(&c);
    assert!(on_a.is_subset(&on_c), "{} of {}", on_c.len(), on_a.len());
}

/// Which list of [`cts_server::citus`] holds `table`.
fn citus_class(table: &str) -> &'static str {
    use cts_server::citus::{coordinator_tables, DISTRIBUTED, REFERENCE};
    let class = [
        ("distributed", DISTRIBUTED.contains(&table)),
        ("reference", REFERENCE.contains(&table)),
        ("coordinator", coordinator_tables().contains(&table)),
    ];
    let mut holding = class.iter().filter(|(_, has)| *has).map(|(c, _)| *c);
    let first = holding.next().unwrap_or("unlisted");
    assert_eq!(holding.next(), None, "{table} is in two Citus lists");
    first
}

/// Citus (issue 17.7) as far as plain PostgreSQL can tell: every table
/// ctsd makes is in one of the lists; each unique index (and primary key)
/// of a distributed table holds `project_id`, which `create_distributed_table`
/// demands; foreign keys stay inside the reference tables or inside the
/// coordinator's; and without the extension `ctsd migrate` and a start
/// distribute nothing and say so.
#[test]
fn the_schema_suits_citus_and_nothing_is_distributed_without_it() {
    let cluster = Cluster::start();
    let out = cluster.ctsd(&["migrate"], &[]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("citus: not installed, no table distributed"),
        "{stdout}"
    );
    let node = cluster.node().start();
    assert!(
        node.log()
            .contains("the citus extension is not installed: no table distributed"),
        "{}",
        node.log()
    );
    // A day partition exists too; Citus distributes it with its parent.
    node.report("main", &[trace(now_ms())]);

    let tables = cluster.sql(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition",
    );
    let unlisted: Vec<&str> = tables
        .lines()
        .filter(|t| citus_class(t) == "unlisted")
        .collect();
    assert!(unlisted.is_empty(), "tables in no Citus list: {unlisted:?}");
    let listed = cts_server::citus::DISTRIBUTED
        .iter()
        .chain(cts_server::citus::REFERENCE)
        .copied()
        .chain(cts_server::citus::coordinator_tables());
    for table in listed {
        assert!(tables.lines().any(|t| t == table), "no table {table}");
    }

    for table in cts_server::citus::DISTRIBUTED {
        let unique = cluster.sql(&format!(
            "SELECT count(*) FROM pg_index WHERE indrelid = '{table}'::regclass AND indisunique"
        ));
        assert_ne!(unique, "0", "{table}: no unique key to check");
        let without = cluster.sql(&format!(
            "SELECT i.indexrelid::regclass FROM pg_index i \
             WHERE i.indrelid = '{table}'::regclass AND i.indisunique AND NOT EXISTS ( \
               SELECT 1 FROM pg_attribute a WHERE a.attrelid = i.indrelid \
               AND a.attname = 'project_id' AND a.attnum = ANY (i.indkey))"
        ));
        assert!(
            without.is_empty(),
            "{table}: unique indexes without project_id: {without}"
        );
    }

    let keys = cluster.sql(
        "SELECT conrelid::regclass || ' ' || confrelid::regclass FROM pg_constraint \
         WHERE contype = 'f'",
    );
    assert!(!keys.is_empty());
    for key in keys.lines() {
        let (from, to) = key.split_once(' ').unwrap();
        let (from_class, to_class) = (citus_class(from), citus_class(to));
        assert!(
            from_class == to_class && from_class != "distributed",
            "foreign key {from} ({from_class}) -> {to} ({to_class})"
        );
    }
}

/// The node holding the retention lease, as its row names it; empty while
/// nobody holds it.
fn retention_holder(cluster: &Cluster) -> String {
    cluster.sql("SELECT holder FROM leases WHERE consumer = 'retention' AND expires_at > now()")
}

/// Retention passes run on one node at a time, under a lease row (two
/// passes would trip over each other's detach); a pass makes tomorrow's
/// day tables ahead of its first batch. When the holder is killed another
/// node takes the passes over.
#[test]
fn one_node_at_a_time_runs_retention_and_another_takes_over_when_it_dies() {
    let cluster = Cluster::start()
        .with("CTS_LEASES_TTL", "2s")
        .with("CTS_LEASES_RENEW_EVERY", "500ms")
        .with("CTS_STORE_RETENTION_CHECK_INTERVAL", "200ms");
    let a = cluster.node().start();
    let roots = tempfile::tempdir().unwrap();
    let b = cluster.another(&a, &roots.path().join("b"));
    let mut nodes = [a, b];

    let tomorrow = "SELECT to_regclass('cts_traces_' || \
                    to_char(now() AT TIME ZONE 'UTC' + interval '1 day', 'YYYYMMDD')) IS NOT NULL";
    wait_for("a retention pass", Duration::from_secs(20), || {
        !retention_holder(&cluster).is_empty() && cluster.sql(tomorrow) == "t"
    });
    let holder = retention_holder(&cluster);
    let holders = nodes.iter().filter(|n| n.log().contains(&holder)).count();
    assert_eq!(holders, 1, "one node holds the retention lease: {holder:?}");
    let victim = nodes
        .iter()
        .position(|n| n.log().contains(&holder))
        .unwrap();
    nodes[victim].kill();
    wait_for(
        "another node running retention",
        Duration::from_secs(20),
        || {
            let now = retention_holder(&cluster);
            !now.is_empty() && now != holder
        },
    );
    let survivor = &nodes[1 - victim];
    assert!(survivor.log().contains(&retention_holder(&cluster)));
    assert!(
        !survivor.log().contains("retention pass failed"),
        "{}",
        survivor.log()
    );
}

/// A batch into a day that retention has begun removing (another node's
/// clock ran ahead, or the day expired while the batch was on its way)
/// is the client's late trace, answered like one older than the window:
/// 400 naming `time`, nothing stored. Not a 500 that says the server
/// failed and invites the same retry for ever.
#[test]
fn a_batch_into_a_day_retention_is_removing_is_refused_as_too_old() {
    let cluster = Cluster::start();
    let node = cluster.node().start();
    node.report("main", &[trace(now_ms())]);
    // Retention's fence on today's positions, as a pass sets it.
    cluster.sql(
        "DO $$ DECLARE day text := to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD'); BEGIN \
         EXECUTE format('CREATE TRIGGER cts_day_retired BEFORE INSERT ON %I \
         FOR EACH ROW EXECUTE FUNCTION cts_day_retired(%L)', \
         'cts_trace_order_' || replace(day, '-', ''), \
         'the traces of ' || day || ' are not stored: retention is removing that day'); END $$",
    );
    let (id, late) = trace_with_id(now_ms());
    let answer = node.post_traces("main", &batch(&[late]));
    assert_eq!(answer.status, 400, "{}", answer.text);
    assert_eq!(answer.body["error_code"], "CTS.0003", "{}", answer.text);
    let msg = answer.body["error_msg"].as_str().unwrap();
    assert!(msg.contains("time") && msg.contains("retention"), "{msg}");
    assert!(ids(&node.by_id("main", &id)).is_empty());
}
