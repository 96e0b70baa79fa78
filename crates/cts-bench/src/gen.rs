//! Realistic ~1 KB management traces, cheap to produce at 100k+/s.
//!
//! Everything costly (choosing services, users, bodies; JSON encoding) is
//! done once for a pool of fragments. A trace is then the concatenation
//! `{"time":T,"resource_id":"R","resource_name":"N"` + fragment tail, where
//! T grows with the trace's sequence number and R/N come from a resource
//! pool far larger than the fragment pool (so resource filters stay
//! selective). Trace `k` is a pure function of `k`, so the baseline stores
//! exactly the traces the server got, and queries can draw values weighted
//! like the data by drawing random `k`.

use rand::distr::weighted::WeightedIndex;
use rand::distr::Distribution;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

/// (service, weight, [(resource_type, [trace_name])]).
type ServiceDef = (
    &'static str,
    u32,
    &'static [(&'static str, &'static [&'static str])],
);

#[rustfmt::skip]
const SERVICES: &[ServiceDef] = &[
    ("ECS", 16, &[("ecs", &["createServer", "deleteServer", "startServer", "stopServer", "rebootServer", "resizeServer", "changePassword"])]),
    ("IAM", 12, &[("user", &["login", "logout", "createUser", "updateUser", "deleteUser"]), ("credential", &["createCredential", "deleteCredential"]), ("group", &["addUserToGroup", "removeUserFromGroup"])]),
    ("KMS", 10, &[("cmk", &["createKey", "enableKey", "disableKey", "scheduleKeyDeletion", "createDatakey", "encryptData", "decryptData"])]),
    ("OBS", 9, &[("bucket", &["createBucket", "deleteBucket", "setBucketPolicy", "setBucketAcl", "setBucketLifecycle"])]),
    ("VPC", 9, &[("vpc", &["createVpc", "updateVpc", "deleteVpc"]), ("subnet", &["createSubnet", "deleteSubnet"]), ("securityGroup", &["createSecurityGroup", "createSecurityGroupRule", "deleteSecurityGroupRule"]), ("eip", &["createEip", "bindEip", "unbindEip", "deleteEip"])]),
    ("EVS", 8, &[("volume", &["createVolume", "deleteVolume", "attachVolume", "detachVolume", "extendVolume"]), ("snapshot", &["createSnapshot", "deleteSnapshot"])]),
    ("ELB", 5, &[("loadbalancer", &["createLoadbalancer", "deleteLoadbalancer"]), ("listener", &["createListener", "updateListener"]), ("pool", &["createPool", "addMember", "removeMember"])]),
    ("RDS", 5, &[("instance", &["createInstance", "deleteInstance", "restartInstance", "resizeFlavor"]), ("backup", &["createManualBackup", "deleteManualBackup"])]),
    ("CCE", 5, &[("cluster", &["createCluster", "deleteCluster", "upgradeCluster"]), ("nodepool", &["createNodePool", "scaleNodePool", "deleteNodePool"])]),
    ("CTS", 2, &[("tracker", &["createTracker", "updateTracker", "deleteTracker"]), ("notification", &["createNotification", "deleteNotification"])]),
    ("IMS", 2, &[("image", &["createImage", "deleteImage", "shareImage", "exportImage"])]),
    ("AS", 2, &[("scaling_group", &["createScalingGroup", "deleteScalingGroup"]), ("scaling_policy", &["createScalingPolicy", "executeScalingPolicy"])]),
    ("DNS", 2, &[("zone", &["createZone", "deleteZone"]), ("recordset", &["createRecordSet", "updateRecordSet", "deleteRecordSet"])]),
    ("CBR", 2, &[("vault", &["createVault", "deleteVault"]), ("backup", &["createBackup", "restoreBackup", "deleteBackup"])]),
    ("SFS", 1, &[("share", &["createShare", "deleteShare", "expandShare"])]),
    ("DCS", 1, &[("dcs", &["createInstance", "deleteInstance", "modifyInstance"])]),
    ("DMS", 1, &[("kafka", &["createInstance", "createTopic", "deleteTopic"])]),
    ("SMN", 1, &[("topic", &["createTopic", "publishMessage", "deleteTopic"]), ("subscription", &["subscribe", "unsubscribe"])]),
    ("WAF", 1, &[("policy", &["createPolicy", "updatePolicy"]), ("certificate", &["uploadCertificate", "deleteCertificate"])]),
    ("DDS", 1, &[("instance", &["createInstance", "deleteInstance", "resizeInstance"])]),
    ("APIG", 1, &[("api", &["createApi", "publishApi", "deleteApi"]), ("apigroup", &["createApiGroup"])]),
    ("FG", 1, &[("function", &["createFunction", "updateFunctionCode", "deleteFunction"])]),
    ("SWR", 1, &[("repository", &["createRepository", "deleteRepository", "pushImage"])]),
    ("NAT", 1, &[("natGateway", &["createNatGateway", "deleteNatGateway"]), ("snatRule", &["createSnatRule", "deleteSnatRule"])]),
    ("DLI", 1, &[("queue", &["createQueue", "deleteQueue"]), ("job", &["submitJob", "cancelJob"])]),
];

const RATINGS: [(&str, u32, &[&str]); 3] = [
    ("normal", 85, &["200", "201", "202", "204"]),
    ("warning", 12, &["400", "403", "404", "409"]),
    ("incident", 3, &["500", "502", "503"]),
];

const FIRST: &[&str] = &[
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
    "nina", "oscar", "peggy", "rupert", "sybil", "trent", "victor", "walter", "yara",
];
const LAST: &[&str] = &[
    "smith", "meyer", "schulz", "novak", "rossi", "garcia", "kowalski", "dubois", "jensen",
    "silva", "weber", "fischer", "wagner", "becker", "hoffmann",
];
const ORGS: &[&str] = &[
    "acme",
    "globex",
    "initech",
    "umbrella",
    "hooli",
    "stark",
    "wayne",
    "tyrell",
    "cyberdyne",
    "soylent",
];
const WORDS: &[&str] = &[
    "prod",
    "staging",
    "dev",
    "web",
    "api",
    "db",
    "cache",
    "batch",
    "edge",
    "analytics",
    "billing",
    "auth",
    "search",
    "media",
    "gateway",
    "worker",
    "frontend",
    "backend",
    "eu",
    "de",
];
const AZS: &[&str] = &["eu-de-01", "eu-de-02", "eu-de-03", "eu-nl-01", "eu-nl-02"];
const FLAVORS: &[&str] = &[
    "s3.large.2",
    "s3.xlarge.4",
    "c4.2xlarge.2",
    "m4.large.8",
    "s6.medium.2",
];
const AGENTS: &[&str] = &[
    "huaweicloud-usdk-python/3.1.86",
    "Terraform/1.7.5 (+https://www.terraform.io) Terraform-Plugin-SDK/2.10.1 terraform-provider-opentelekomcloud/1.36.1",
    "openstacksdk/3.0.0 keystoneauth1/5.6.0 python-requests/2.31.0 CPython/3.11.8",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:124.0) Gecko/20100101 Firefox/124.0",
    "otc-cli/2.1.4 go1.22.1 linux/amd64",
];

pub const MAIN_PROJECT: &str = "5a1c0e4f3b2d4a6e9f8c7b6a5d4e3f21";
/// Other tenants' traces share the store but must never show in the main
/// project's queries.
pub const OTHER_PROJECTS: [&str; 2] = [
    "8e2f1d3c4b5a49687f6e5d4c3b2a1908",
    "c0ffee0123456789abcdef0123456789",
];

pub struct Config {
    pub seed: u64,
    pub users: usize,
    pub domains: usize,
    pub resources: usize,
    pub fragments: usize,
    pub enterprise_projects: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            seed: 42,
            users: 1_000,
            domains: 50,
            resources: 200_000,
            fragments: 20_000,
            enterprise_projects: 8,
        }
    }
}

pub struct User {
    pub name: String,
    pub access_keys: Vec<String>,
}

pub struct Resource {
    pub id: String,
    pub name: String,
}

/// The indexed values of a fragment, for queries and the baseline's columns.
pub struct FragmentMeta {
    pub service: &'static str,
    pub resource_type: &'static str,
    /// Index into `Generator::resources_by_type`.
    pub type_index: usize,
    pub trace_name: &'static str,
    pub user: usize,
    pub access_key: String,
    pub rating: &'static str,
    pub enterprise_project_id: String,
}

pub struct Fragment {
    /// Everything after resource_name, starting with a comma, ending with `}`.
    pub tail: String,
    pub meta: FragmentMeta,
}

/// The indexed values of one generated trace.
pub struct TraceValues<'a> {
    pub meta: &'a FragmentMeta,
    pub user: &'a str,
    pub resource: &'a Resource,
}

pub struct Generator {
    pub users: Vec<User>,
    pub fragments: Vec<Fragment>,
    /// Resource pools, one per (service, resource_type).
    pub resources_by_type: Vec<Vec<Resource>>,
    pub enterprise_projects: Vec<String>,
    seed: u64,
}

fn hex(rng: &mut SmallRng, len: usize) -> String {
    (0..len)
        .map(|_| char::from_digit(rng.random_range(0..16), 16).unwrap())
        .collect()
}

pub fn uuid(rng: &mut SmallRng) -> String {
    uuid::Builder::from_random_bytes(rng.random())
        .into_uuid()
        .hyphenated()
        .to_string()
}

fn pick<'a>(rng: &mut SmallRng, items: &[&'a str]) -> &'a str {
    items[rng.random_range(0..items.len())]
}

fn sentence(rng: &mut SmallRng, len: usize) -> String {
    let mut s = String::with_capacity(len + 12);
    while s.len() < len {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(pick(rng, WORDS));
    }
    s.truncate(len);
    s
}

/// splitmix64: decorrelates consecutive sequence numbers.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

impl Generator {
    pub fn new(cfg: &Config) -> Generator {
        let mut rng = SmallRng::seed_from_u64(cfg.seed);
        let domains: Vec<(String, String)> = (0..cfg.domains)
            .map(|i| (hex(&mut rng, 32), format!("{}-{i}", ORGS[i % ORGS.len()])))
            .collect();
        let users: Vec<User> = (0..cfg.users)
            .map(|i| User {
                name: format!(
                    "{}.{}{i}",
                    FIRST[i % FIRST.len()],
                    LAST[(i / 7) % LAST.len()]
                ),
                access_keys: (0..1 + i % 2)
                    .map(|_| {
                        (0..20)
                            .map(|_| {
                                let c = rng.random_range(0..36u32);
                                char::from_digit(c, 36).unwrap().to_ascii_uppercase()
                            })
                            .collect()
                    })
                    .collect(),
            })
            .collect();
        let user_ids: Vec<String> = (0..cfg.users).map(|_| hex(&mut rng, 32)).collect();
        let user_ips: Vec<String> = (0..cfg.users)
            .map(|_| {
                format!(
                    "{}.{}.{}.{}",
                    rng.random_range(1..224),
                    rng.random_range(0..256),
                    rng.random_range(0..256),
                    rng.random_range(1..255)
                )
            })
            .collect();
        // Zipf-like: a few users do most of the work, as in real accounts.
        let user_dist = WeightedIndex::new((1..=cfg.users).map(|r| 1.0 / r as f64)).unwrap();
        let enterprise_projects: Vec<String> = (0..cfg.enterprise_projects)
            .map(|i| {
                if i == 0 {
                    "0".to_string()
                } else {
                    uuid(&mut rng)
                }
            })
            .collect();
        let ep_dist =
            WeightedIndex::new((0..cfg.enterprise_projects).map(|i| if i == 0 { 8 } else { 1 }))
                .unwrap();

        let types: Vec<(usize, &'static str, &'static [&'static str])> = SERVICES
            .iter()
            .enumerate()
            .flat_map(|(s, (_, _, rts))| rts.iter().map(move |(rt, ops)| (s, *rt, *ops)))
            .collect();
        let type_weights: Vec<f64> = types
            .iter()
            .map(|(s, _, _)| SERVICES[*s].1 as f64 / SERVICES[*s].2.len() as f64)
            .collect();
        let type_total: f64 = type_weights.iter().sum();
        let resources_by_type: Vec<Vec<Resource>> = types
            .iter()
            .zip(&type_weights)
            .map(|((_, rt, _), w)| {
                let n = ((cfg.resources as f64 * w / type_total) as usize).max(1);
                (0..n)
                    .map(|i| Resource {
                        id: uuid(&mut rng),
                        name: format!(
                            "{}-{}-{}-{i:05}",
                            rt.to_lowercase(),
                            pick(&mut rng, WORDS),
                            pick(&mut rng, WORDS)
                        ),
                    })
                    .collect()
            })
            .collect();

        let type_dist = WeightedIndex::new(&type_weights).unwrap();
        let rating_dist = WeightedIndex::new(RATINGS.iter().map(|r| r.1)).unwrap();
        let fragments = (0..cfg.fragments)
            .map(|_| {
                let ti = type_dist.sample(&mut rng);
                let (si, rt, ops) = types[ti];
                let service = SERVICES[si].0;
                let trace_name = pick(&mut rng, ops);
                let u = user_dist.sample(&mut rng);
                let (domain_id, domain_name) = &domains[u % domains.len()];
                let access_key = users[u].access_keys[rng.random_range(0..users[u].access_keys.len())].clone();
                let (rating, _, codes) = RATINGS[rating_dist.sample(&mut rng)];
                let code = pick(&mut rng, codes);
                let ep = enterprise_projects[ep_dist.sample(&mut rng)].clone();
                let trace_type = match rng.random_range(0..20) {
                    0 => "SystemAction",
                    1..=5 => "ConsoleAction",
                    _ => "ApiCall",
                };
                let mut request = json!({
                    rt: {
                        "name": format!("{}-{}", pick(&mut rng, WORDS), hex(&mut rng, 6)),
                        "availability_zone": pick(&mut rng, AZS),
                        "flavorRef": pick(&mut rng, FLAVORS),
                        "vpc_id": uuid(&mut rng),
                    }
                });
                let response = if rating == "normal" {
                    json!({"status": "SUCCESS", "job_id": hex(&mut rng, 32), "job_type": trace_name,
                           "entities": {"id": uuid(&mut rng)}})
                } else {
                    json!({"error_code": format!("{service}.{}", rng.random_range(1000..9999)),
                           "error_msg": sentence(&mut rng, 60), "request_id": hex(&mut rng, 32)})
                };
                let request_id = uuid(&mut rng);
                let agent = pick(&mut rng, AGENTS);
                let build = |request: &serde_json::Value| {
                    let doc = json!({
                        "user": {"id": user_ids[u], "name": users[u].name, "domain": {"id": domain_id, "name": domain_name},
                                 "access_key_id": access_key, "user_name": users[u].name, "type": "IAMUser"},
                        "service_type": service, "resource_type": rt, "trace_name": trace_name, "trace_type": trace_type,
                        "code": code, "source_ip": user_ips[u], "request": request, "response": response,
                        "api_version": format!("v{}", 1 + si % 3), "request_id": request_id,
                        "enterprise_project_id": ep, "user_agent": agent,
                    })
                    .to_string();
                    format!(",{}", &doc[1..])
                };
                let mut tail = build(&request);
                // Pad to a target size drawn around 1 KB with a free-text
                // description, as real request bodies carry.
                let typical_head = r#"{"time":1700000000000,"resource_id":"00000000-0000-0000-0000-000000000000","resource_name":"volume-prod-web-00000""#.len();
                let target = rng.random_range(930..1070);
                let missing = target as isize - (typical_head + tail.len()) as isize - r#","description":"""#.len() as isize;
                if missing > 0 {
                    request[rt]["description"] = sentence(&mut rng, missing as usize).into();
                    tail = build(&request);
                }
                Fragment {
                    tail,
                    meta: FragmentMeta {
                        service,
                        resource_type: rt,
                        type_index: ti,
                        trace_name,
                        user: u,
                        access_key,
                        rating,
                        enterprise_project_id: ep,
                    },
                }
            })
            .collect();
        Generator {
            users,
            fragments,
            resources_by_type,
            enterprise_projects,
            seed: cfg.seed,
        }
    }

    /// Which fragment and resource trace `k` uses.
    fn parts(&self, k: u64) -> (&Fragment, &Resource) {
        let h = mix(k ^ self.seed.rotate_left(17));
        let f = &self.fragments[(h % self.fragments.len() as u64) as usize];
        let pool = &self.resources_by_type[f.meta.type_index];
        (f, &pool[((h >> 32) % pool.len() as u64) as usize])
    }

    pub fn values(&self, k: u64) -> TraceValues<'_> {
        let (f, r) = self.parts(k);
        TraceValues {
            meta: &f.meta,
            user: &self.users[f.meta.user].name,
            resource: r,
        }
    }

    /// Appends trace `k` with the given time (and, when given, a
    /// reporter-supplied trace_id) to `out`.
    pub fn write_trace(&self, out: &mut Vec<u8>, k: u64, time: i64, trace_id: Option<&str>) {
        let (f, r) = self.parts(k);
        out.push(b'{');
        if let Some(id) = trace_id {
            out.extend_from_slice(b"\"trace_id\":\"");
            out.extend_from_slice(id.as_bytes());
            out.extend_from_slice(b"\",");
        }
        out.extend_from_slice(b"\"time\":");
        out.extend_from_slice(time.to_string().as_bytes());
        out.extend_from_slice(b",\"resource_id\":\"");
        out.extend_from_slice(r.id.as_bytes());
        out.extend_from_slice(b"\",\"resource_name\":\"");
        out.extend_from_slice(r.name.as_bytes());
        out.push(b'"');
        out.extend_from_slice(f.tail.as_bytes());
    }

    /// Traces `ks` as ctsd records them in `project` at `now_ms`: reported
    /// a second earlier and checked as a report is.
    pub fn recorded(
        &self,
        ks: std::ops::Range<u64>,
        project: &str,
        now_ms: i64,
    ) -> anyhow::Result<Vec<cts_model::Trace>> {
        let mut body = b"{\"traces\":[".to_vec();
        for k in ks.clone() {
            if k > ks.start {
                body.push(b',');
            }
            self.write_trace(&mut body, k, now_ms - 1000, None);
        }
        body.extend_from_slice(b"]}");
        let ctx = cts_model::ReportContext {
            project_id: project,
            now_ms,
            oldest_time_ms: now_ms - 86_400_000,
            newest_time_ms: now_ms + 1,
            max_traces: (ks.end - ks.start) as usize,
        };
        let traces = cts_model::parse_report(&body, &ctx).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(traces
            .into_iter()
            .map(cts_model::Trace::into_owned)
            .collect())
    }
}

/// Where trace `k` of `n` sits in time: spread evenly over `[start, end]`,
/// in order, a few traces per millisecond; about 2% arrive late, stamped up
/// to 30 s before their neighbours.
pub struct Timeline {
    pub start: i64,
    pub end: i64,
    pub n: u64,
}

/// Traces sharing one millisecond.
const PER_MS: u64 = 4;

impl Timeline {
    /// `n` traces over the seven days before `now`: inside the 7-day
    /// retention with an hour to spare, never in the future.
    pub fn last_week(now: i64, n: u64) -> Timeline {
        Timeline {
            start: now - 7 * 86_400_000 + 3_600_000,
            end: now - 60_000,
            n,
        }
    }

    pub fn time(&self, k: u64) -> i64 {
        let slots = self.n.div_ceil(PER_MS).max(1);
        let span = (self.end - self.start) as f64;
        let t = self.start + ((k / PER_MS) as f64 * span / slots as f64) as i64;
        let h = mix(k);
        if h.is_multiple_of(50) {
            (t - (h >> 40) as i64 % 30_000).max(self.start)
        } else {
            t
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_are_about_1kb_and_valid_json() {
        let g = Generator::new(&Config {
            fragments: 2_000,
            resources: 20_000,
            ..Config::default()
        });
        let mut sizes = Vec::new();
        for k in 0..5_000 {
            let mut buf = Vec::new();
            g.write_trace(&mut buf, k, 1_700_000_000_000 + k as i64, None);
            let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
            let vals = g.values(k);
            assert_eq!(v["service_type"], vals.meta.service);
            assert_eq!(v["user"]["name"], vals.user);
            assert_eq!(v["resource_id"].as_str().unwrap(), vals.resource.id);
            sizes.push(buf.len());
        }
        let mean = sizes.iter().sum::<usize>() / sizes.len();
        assert!((970..=1030).contains(&mean), "mean {mean}");
        assert!(
            *sizes.iter().min().unwrap() >= 880,
            "{:?}",
            sizes.iter().min()
        );
        assert!(
            *sizes.iter().max().unwrap() <= 1120,
            "{:?}",
            sizes.iter().max()
        );

        let mut buf = Vec::new();
        g.write_trace(&mut buf, 7, 1, Some("0f8fad5b-d9cb-469f-a165-70867728950e"));
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["trace_id"], "0f8fad5b-d9cb-469f-a165-70867728950e");
    }

    #[test]
    fn ratings_follow_the_mix() {
        let g = Generator::new(&Config::default());
        let incidents = g
            .fragments
            .iter()
            .filter(|f| f.meta.rating == "incident")
            .count();
        let normal = g
            .fragments
            .iter()
            .filter(|f| f.meta.rating == "normal")
            .count();
        let n = g.fragments.len() as f64;
        assert!((0.02..0.04).contains(&(incidents as f64 / n)));
        assert!((0.82..0.88).contains(&(normal as f64 / n)));
        assert_eq!(
            g.resources_by_type.iter().map(Vec::len).sum::<usize>() / 1000,
            199
        );
    }

    #[test]
    fn timeline_is_ordered_and_bounded() {
        let tl = Timeline {
            start: 1_000_000,
            end: 2_000_000,
            n: 100_000,
        };
        let mut late = 0;
        for k in 0..tl.n {
            let t = tl.time(k);
            assert!((tl.start..=tl.end).contains(&t));
            if k > 0 && t < tl.time(k - 1) {
                late += 1;
            }
        }
        assert!((1_000..3_000).contains(&late), "{late}");
        assert_eq!(tl.time(0), tl.time(3));
    }
}
