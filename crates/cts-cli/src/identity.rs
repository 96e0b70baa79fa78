//! Identity management: `cts login`, `projects`, `users`, `groups`,
//! `roles` and `access-keys`, over the server's Keystone v3 and IAM
//! credential APIs.
//!
//! The resources are alike (list, create, find by name or id, update,
//! delete), so one [`Kind`] table describes each and the commands are one
//! generic call each. Wherever an id is needed a name is accepted too.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::client::{enc, is_status};
use crate::ctx::{Column, Ctx};
use crate::Output;

/// A kind of identity resource and how it is shown.
pub struct Kind {
    /// `user`: the key of one in a body, and the word in messages.
    one: &'static str,
    /// `users`: the key of a list.
    many: &'static str,
    /// Where the collection lives.
    base: &'static str,
    /// The method that changes one.
    update: &'static str,
    columns: &'static [Column],
}

const PROJECT: Kind = Kind {
    one: "project",
    many: "projects",
    base: "/v3/projects",
    update: "PATCH",
    columns: &[
        ("ID", "/id"),
        ("NAME", "/name"),
        ("REGION", "/region"),
        ("ENABLED", "/enabled"),
        ("DESCRIPTION", "/description"),
    ],
};

const USER: Kind = Kind {
    one: "user",
    many: "users",
    base: "/v3/users",
    update: "PATCH",
    columns: &[
        ("ID", "/id"),
        ("NAME", "/name"),
        ("ENABLED", "/enabled"),
        ("EMAIL", "/email"),
        ("DESCRIPTION", "/description"),
    ],
};

const GROUP: Kind = Kind {
    one: "group",
    many: "groups",
    base: "/v3/groups",
    update: "PATCH",
    columns: &[
        ("ID", "/id"),
        ("NAME", "/name"),
        ("DESCRIPTION", "/description"),
    ],
};

const ROLE: Kind = Kind {
    one: "role",
    many: "roles",
    base: "/v3/roles",
    update: "PATCH",
    columns: &[
        ("ID", "/id"),
        ("NAME", "/name"),
        ("DESCRIPTION", "/description"),
    ],
};

const KEY: Kind = Kind {
    one: "credential",
    many: "credentials",
    base: "/v3.0/OS-CREDENTIAL/credentials",
    update: "PUT",
    columns: &[
        ("ACCESS_KEY", "/access"),
        ("STATUS", "/status"),
        ("USER_ID", "/user_id"),
        ("CREATED", "/create_time"),
        ("LAST_USED", "/last_use_time"),
        ("DESCRIPTION", "/description"),
    ],
};

/// A new key, shown once with its secret.
const NEW_KEY_COLUMNS: &[Column] = &[
    ("ACCESS_KEY", "/access"),
    ("SECRET_KEY", "/secret"),
    ("STATUS", "/status"),
    ("USER_ID", "/user_id"),
    ("DESCRIPTION", "/description"),
];

const ASSIGNMENT: Kind = Kind {
    one: "role_assignment",
    many: "role_assignments",
    base: "/v3/role_assignments",
    update: "PATCH",
    columns: &[
        ("ROLE", "/role/name"),
        ("PROJECT", "/scope/project/name"),
        ("USER", "/user/name"),
        ("GROUP", "/group/name"),
        ("PROJECT_ID", "/scope/project/id"),
        ("ACTOR_ID", "/actor_id"),
    ],
};

#[derive(Args)]
pub struct NameFilter {
    /// Only the one with this name.
    #[arg(long)]
    name: Option<String>,
}

impl NameFilter {
    fn query(&self) -> Vec<(&'static str, String)> {
        self.name.iter().map(|n| ("name", n.clone())).collect()
    }
}

#[derive(Subcommand)]
pub enum ProjectsCommand {
    /// List the projects of your domain.
    List(NameFilter),
    /// Create a project.
    Create {
        name: String,
        #[arg(long)]
        description: Option<String>,
        /// Region (default: the part of the name before `_`, e.g. eu-de of eu-de_dev).
        #[arg(long)]
        region: Option<String>,
    },
    /// Delete a project (name or id).
    Delete { project: String },
}

#[derive(Subcommand)]
pub enum UsersCommand {
    /// List the users of your domain.
    List(NameFilter),
    /// Create a user.
    Create {
        name: String,
        /// Its password (without one, the user can only use access keys).
        #[arg(long)]
        password: Option<String>,
        #[arg(long)]
        email: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// Create it disabled.
        #[arg(long)]
        disabled: bool,
    },
    /// Delete a user (name or id).
    Delete { user: String },
    /// Set a user's password.
    SetPassword {
        user: String,
        #[arg(long)]
        password: String,
    },
    /// Let a user sign in and use its keys again.
    Enable { user: String },
    /// Refuse a user's password, tokens and keys.
    Disable { user: String },
}

#[derive(Subcommand)]
pub enum GroupsCommand {
    /// List the groups of your domain.
    List(NameFilter),
    /// Create a group.
    Create {
        name: String,
        #[arg(long)]
        description: Option<String>,
    },
    /// Delete a group (name or id).
    Delete { group: String },
    /// Make a user a member of a group.
    AddUser { group: String, user: String },
    /// Remove a user from a group.
    RemoveUser { group: String, user: String },
    /// List the members of a group.
    Members { group: String },
}

/// A user or a group, by name or id.
#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct ActorArg {
    /// User name or id.
    #[arg(long)]
    user: Option<String>,
    /// Group name or id.
    #[arg(long)]
    group: Option<String>,
}

#[derive(Args)]
pub struct AssignArgs {
    /// Role name (admin, cts_admin, cts_viewer, cts_reporter) or id.
    #[arg(long)]
    role: String,
    #[command(flatten)]
    actor: ActorArg,
    /// Project name or id (default: --project-id).
    #[arg(long)]
    project: Option<String>,
}

#[derive(Subcommand)]
pub enum RolesCommand {
    /// List the roles.
    List,
    /// Grant a role on a project to a user or group.
    Assign(AssignArgs),
    /// Take a role on a project from a user or group.
    Unassign(AssignArgs),
    /// List role assignments (all of your domain, or of a user, group or project).
    Assignments {
        /// User name or id.
        #[arg(long)]
        user: Option<String>,
        /// Group name or id.
        #[arg(long, conflicts_with = "user")]
        group: Option<String>,
        /// Project name or id.
        #[arg(long)]
        project: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum AccessKeysCommand {
    /// List access keys (yours, or a user's).
    List {
        /// User name or id (default: you).
        #[arg(long)]
        user: Option<String>,
    },
    /// Create an access key (yours, or a user's); the secret is shown only now.
    Create {
        /// User name or id (default: you).
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Delete an access key.
    Delete {
        #[arg(value_name = "ACCESS_KEY")]
        key: String,
    },
    /// Accept an access key again.
    Enable {
        #[arg(value_name = "ACCESS_KEY")]
        key: String,
    },
    /// Refuse an access key (without deleting it).
    Disable {
        #[arg(value_name = "ACCESS_KEY")]
        key: String,
    },
}

#[derive(Args)]
pub struct LoginArgs {
    /// User name [env: CTS_USER_NAME; default: user_name of the credentials file].
    #[arg(long)]
    pub user: Option<String>,
    /// Password [env: CTS_PASSWORD; default: password of the credentials file].
    #[arg(long)]
    pub password: Option<String>,
    /// Domain name [env: CTS_DOMAIN_NAME; default: domain_name of the credentials file].
    #[arg(long)]
    pub domain: Option<String>,
}

impl Ctx<'_> {
    fn list(&self, kind: &Kind, path: &str, query: &[(&str, String)]) -> Result<Vec<Value>> {
        self.get_list(path, query, kind.many)
    }

    /// One resource by name or, failing that, by id.
    fn find(&self, kind: &Kind, key: &str) -> Result<Value> {
        let mut named = self.list(kind, kind.base, &[("name", key.to_string())])?;
        if named.len() == 1 {
            return Ok(named.remove(0));
        }
        match self.client.get(&format!("{}/{}", kind.base, enc(key)), &[]) {
            Ok(body) => Ok(body[kind.one].clone()),
            Err(e) if is_status(&e, 404) => bail!("no {} named or with id {key:?}", kind.one),
            Err(e) => Err(e),
        }
    }

    fn find_id(&self, kind: &Kind, key: &str) -> Result<(String, String)> {
        let v = self.find(kind, key)?;
        let id = v["id"]
            .as_str()
            .context("an answer without id")?
            .to_string();
        Ok((id, label(&v)))
    }

    fn create(&self, kind: &Kind, fields: Value) -> Result<Value> {
        let body = self
            .client
            .call("POST", kind.base, &[], Some(&json!({ kind.one: fields })))?
            .body;
        Ok(body[kind.one].clone())
    }

    fn update(&self, kind: &Kind, id: &str, fields: Value) -> Result<()> {
        let path = format!("{}/{}", kind.base, enc(id));
        let body = json!({ kind.one: fields });
        self.client.call(kind.update, &path, &[], Some(&body))?;
        Ok(())
    }

    fn delete(&self, kind: &Kind, id: &str) -> Result<()> {
        let path = format!("{}/{}", kind.base, enc(id));
        self.client.call("DELETE", &path, &[], None)?;
        Ok(())
    }

    /// The project of `--project`, else of `--project-id`.
    fn project(&self, arg: Option<&str>) -> Result<(String, String)> {
        let key = match arg {
            Some(p) => p,
            None => self.creds.project()?,
        };
        self.find_id(&PROJECT, key)
    }

    fn actor(&self, a: &ActorArg) -> Result<(&'static Kind, String, String)> {
        let (kind, key) = match (&a.user, &a.group) {
            (Some(u), _) => (&USER, u),
            (_, Some(g)) => (&GROUP, g),
            _ => bail!("give --user or --group"),
        };
        let (id, name) = self.find_id(kind, key)?;
        Ok((kind, id, name))
    }
}

/// `name (id)` of a resource, for messages.
fn label(v: &Value) -> String {
    match (v["name"].as_str(), v["id"].as_str()) {
        (Some(n), Some(id)) => format!("{n} ({id})"),
        (_, Some(id)) => id.to_string(),
        _ => v.to_string(),
    }
}

fn key_path(access_key: &str) -> String {
    format!("{}/{}", KEY.base, enc(access_key))
}

pub fn projects(c: &Ctx, cmd: ProjectsCommand) -> Result<()> {
    match cmd {
        ProjectsCommand::List(f) => c.print_list(
            PROJECT.columns,
            &c.list(&PROJECT, PROJECT.base, &f.query())?,
        ),
        ProjectsCommand::Create {
            name,
            description,
            region,
        } => {
            let fields = json!({"name": name, "description": description, "region": region});
            c.print_one(PROJECT.columns, &c.create(&PROJECT, fields)?)
        }
        ProjectsCommand::Delete { project } => {
            let (id, name) = c.find_id(&PROJECT, &project)?;
            c.delete(&PROJECT, &id)?;
            c.done(format!("deleted project {name}"))
        }
    }
}

pub fn users(c: &Ctx, cmd: UsersCommand) -> Result<()> {
    let set = |user: &str, fields: Value, what: &str| -> Result<()> {
        let (id, name) = c.find_id(&USER, user)?;
        c.update(&USER, &id, fields)?;
        c.done(format!("{what} user {name}"))
    };
    match cmd {
        UsersCommand::List(f) => c.print_list(USER.columns, &c.list(&USER, USER.base, &f.query())?),
        UsersCommand::Create {
            name,
            password,
            email,
            description,
            disabled,
        } => {
            let fields = json!({"name": name, "password": password, "email": email,
                                "description": description, "enabled": !disabled});
            c.print_one(USER.columns, &c.create(&USER, fields)?)
        }
        UsersCommand::Delete { user } => {
            let (id, name) = c.find_id(&USER, &user)?;
            c.delete(&USER, &id)?;
            c.done(format!("deleted user {name}"))
        }
        UsersCommand::SetPassword { user, password } => set(
            &user,
            json!({ "password": password }),
            "set the password of",
        ),
        UsersCommand::Enable { user } => set(&user, json!({"enabled": true}), "enabled"),
        UsersCommand::Disable { user } => set(&user, json!({"enabled": false}), "disabled"),
    }
}

pub fn groups(c: &Ctx, cmd: GroupsCommand) -> Result<()> {
    // PUT or DELETE /v3/groups/{group}/users/{user}.
    let membership = |method: &str, group: &str, user: &str| -> Result<(String, String)> {
        let (gid, gname) = c.find_id(&GROUP, group)?;
        let (uid, uname) = c.find_id(&USER, user)?;
        let path = format!("{}/{}/users/{}", GROUP.base, enc(&gid), enc(&uid));
        c.client.call(method, &path, &[], None)?;
        Ok((gname, uname))
    };
    match cmd {
        GroupsCommand::List(f) => {
            c.print_list(GROUP.columns, &c.list(&GROUP, GROUP.base, &f.query())?)
        }
        GroupsCommand::Create { name, description } => {
            let fields = json!({"name": name, "description": description});
            c.print_one(GROUP.columns, &c.create(&GROUP, fields)?)
        }
        GroupsCommand::Delete { group } => {
            let (id, name) = c.find_id(&GROUP, &group)?;
            c.delete(&GROUP, &id)?;
            c.done(format!("deleted group {name}"))
        }
        GroupsCommand::AddUser { group, user } => {
            let (g, u) = membership("PUT", &group, &user)?;
            c.done(format!("added user {u} to group {g}"))
        }
        GroupsCommand::RemoveUser { group, user } => {
            let (g, u) = membership("DELETE", &group, &user)?;
            c.done(format!("removed user {u} from group {g}"))
        }
        GroupsCommand::Members { group } => {
            let (id, _) = c.find_id(&GROUP, &group)?;
            let path = format!("{}/{}/users", GROUP.base, enc(&id));
            c.print_list(USER.columns, &c.list(&USER, &path, &[])?)
        }
    }
}

pub fn roles(c: &Ctx, cmd: RolesCommand) -> Result<()> {
    let assignment = |method: &str, a: &AssignArgs| -> Result<String> {
        let (pid, pname) = c.project(a.project.as_deref())?;
        let (kind, aid, aname) = c.actor(&a.actor)?;
        let path = format!(
            "/v3/projects/{}/{}/{}/roles/{}",
            enc(&pid),
            kind.many,
            enc(&aid),
            enc(&a.role)
        );
        c.client.call(method, &path, &[], None)?;
        Ok(format!(
            "role {} on project {pname} {} {} {aname}",
            a.role,
            if method == "PUT" { "to" } else { "from" },
            kind.one
        ))
    };
    match cmd {
        RolesCommand::List => c.print_list(ROLE.columns, &c.list(&ROLE, ROLE.base, &[])?),
        RolesCommand::Assign(a) => c.done(format!("granted {}", assignment("PUT", &a)?)),
        RolesCommand::Unassign(a) => c.done(format!("revoked {}", assignment("DELETE", &a)?)),
        RolesCommand::Assignments {
            user,
            group,
            project,
        } => {
            let mut query = Vec::new();
            if let Some(p) = &project {
                query.push(("scope.project.id", c.find_id(&PROJECT, p)?.0));
            }
            if let Some(u) = &user {
                query.push(("user.id", c.find_id(&USER, u)?.0));
            }
            if let Some(g) = &group {
                query.push(("group.id", c.find_id(&GROUP, g)?.0));
            }
            let mut items = c.list(&ASSIGNMENT, ASSIGNMENT.base, &query)?;
            name_assignments(c, &mut items)?;
            c.print_list(ASSIGNMENT.columns, &items)
        }
    }
}

/// Adds the names of the projects, users and groups the assignments
/// name only by id, and `actor_id`.
fn name_assignments(c: &Ctx, items: &mut [Value]) -> Result<()> {
    let mut names = std::collections::HashMap::new();
    for kind in [&PROJECT, &USER, &GROUP] {
        for v in c.list(kind, kind.base, &[])? {
            if let (Some(id), Some(name)) = (v["id"].as_str(), v["name"].as_str()) {
                names.insert((kind.one, id.to_string()), name.to_string());
            }
        }
    }
    for item in items {
        for (kind, at) in [
            ("project", "/scope/project"),
            ("user", "/user"),
            ("group", "/group"),
        ] {
            let Some(obj) = item.pointer_mut(at) else {
                continue;
            };
            let id = obj["id"].as_str().unwrap_or_default().to_string();
            if let Some(name) = names.get(&(kind, id.clone())) {
                obj["name"] = json!(name);
            }
            if kind != "project" {
                item["actor_id"] = json!(id);
            }
        }
    }
    Ok(())
}

pub fn access_keys(c: &Ctx, cmd: AccessKeysCommand) -> Result<()> {
    let user_id = |user: Option<&String>| -> Result<Option<String>> {
        user.map(|u| Ok(c.find_id(&USER, u)?.0)).transpose()
    };
    let set_status = |ak: &str, status: &str| -> Result<()> {
        c.client.call(
            KEY.update,
            &key_path(ak),
            &[],
            Some(&json!({"credential": {"status": status}})),
        )?;
        c.done(format!("access key {ak} is {status}"))
    };
    match cmd {
        AccessKeysCommand::List { user } => {
            let query: Vec<(&str, String)> = user_id(user.as_ref())?
                .map(|id| ("user_id", id))
                .into_iter()
                .collect();
            c.print_list(KEY.columns, &c.list(&KEY, KEY.base, &query)?)
        }
        AccessKeysCommand::Create { user, description } => {
            let fields = json!({"user_id": user_id(user.as_ref())?, "description": description});
            let key = c.create(&KEY, fields)?;
            c.print_one(NEW_KEY_COLUMNS, &key)?;
            eprintln!(
                "warning: store the secret key now; it is shown only once and cannot be read again"
            );
            Ok(())
        }
        AccessKeysCommand::Delete { key } => {
            c.client.call("DELETE", &key_path(&key), &[], None)?;
            c.done(format!("deleted access key {key}"))
        }
        AccessKeysCommand::Enable { key } => set_status(&key, "active"),
        AccessKeysCommand::Disable { key } => set_status(&key, "inactive"),
    }
}

/// `POST /v3/auth/tokens` with the password method, scoped to the project
/// when one is known.
pub fn login(c: &Ctx) -> Result<()> {
    let creds = c.creds;
    let need = |v: &Option<String>, what: &str| {
        v.clone()
            .with_context(|| format!("no {what} to log in with"))
    };
    let user = need(&creds.user_name, "user: give --user (CTS_USER_NAME)")?;
    let password = need(
        &creds.password,
        "password: give --password or set CTS_PASSWORD",
    )?;
    let domain = need(
        &creds.domain_name,
        "domain: give --domain (CTS_DOMAIN_NAME)",
    )?;
    let mut auth = json!({"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "password": password, "domain": {"name": domain}}}}});
    if let Some(project) = &creds.project_id {
        auth["scope"] = json!({"project": {"id": project}});
    }
    let reply = c.client.call(
        "POST",
        "/v3/auth/tokens",
        &[("nocatalog", "1".to_string())],
        Some(&json!({ "auth": auth })),
    )?;
    let token = reply
        .headers
        .get("x-subject-token")
        .and_then(|v| v.to_str().ok())
        .context("the server issued no X-Subject-Token")?;
    let t = &reply.body["token"];
    let result = json!({
        "token": token,
        "expires_at": t["expires_at"],
        "user": t["user"]["name"],
        "domain": t["user"]["domain"]["name"],
        "project": t["project"]["name"],
        "project_id": t["project"]["id"],
        "roles": t["roles"].as_array().map(|roles| {
            roles.iter().filter_map(|r| r["name"].as_str()).collect::<Vec<_>>().join(",")
        }),
    });
    const COLUMNS: &[Column] = &[
        ("TOKEN", "/token"),
        ("EXPIRES_AT", "/expires_at"),
        ("USER", "/user"),
        ("DOMAIN", "/domain"),
        ("PROJECT", "/project"),
        ("PROJECT_ID", "/project_id"),
        ("ROLES", "/roles"),
    ];
    c.print_one(COLUMNS, &result)?;
    if let Output::Table = c.output {
        eprintln!("use it with --token or: export CTS_AUTH_TOKEN=<token>");
    }
    Ok(())
}
