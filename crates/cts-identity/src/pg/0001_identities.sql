-- The identity tables on PostgreSQL: SQLite's versions 1 and 2 in one step.
-- Names and ids sort bytewise, as in SQLite; flags are bigint 0/1.
CREATE TABLE meta (
    key text COLLATE "C" PRIMARY KEY,
    value text NOT NULL
);
CREATE TABLE domains (
    id text COLLATE "C" PRIMARY KEY,
    name text COLLATE "C" NOT NULL UNIQUE,
    enabled bigint NOT NULL CHECK (enabled IN (0, 1)),
    created_at bigint NOT NULL
);
CREATE TABLE projects (
    id text COLLATE "C" PRIMARY KEY,
    domain_id text COLLATE "C" NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
    name text COLLATE "C" NOT NULL,
    description text NOT NULL,
    enabled bigint NOT NULL CHECK (enabled IN (0, 1)),
    region text NOT NULL,
    created_at bigint NOT NULL,
    UNIQUE (domain_id, name)
);
CREATE TABLE users (
    id text COLLATE "C" PRIMARY KEY,
    domain_id text COLLATE "C" NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
    name text COLLATE "C" NOT NULL,
    description text NOT NULL,
    enabled bigint NOT NULL CHECK (enabled IN (0, 1)),
    email text,
    default_project_id text COLLATE "C" REFERENCES projects(id) ON DELETE SET NULL,
    password_hash text,
    created_at bigint NOT NULL,
    password_changed_at bigint,
    UNIQUE (domain_id, name)
);
CREATE INDEX users_default_project ON users(default_project_id);
CREATE TABLE groups (
    id text COLLATE "C" PRIMARY KEY,
    domain_id text COLLATE "C" NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
    name text COLLATE "C" NOT NULL,
    description text NOT NULL,
    created_at bigint NOT NULL,
    UNIQUE (domain_id, name)
);
CREATE TABLE memberships (
    group_id text COLLATE "C" NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    user_id text COLLATE "C" NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX memberships_user ON memberships(user_id);
CREATE TABLE roles (
    id text COLLATE "C" PRIMARY KEY,
    name text COLLATE "C" NOT NULL UNIQUE,
    description text NOT NULL
);
CREATE TABLE user_assignments (
    project_id text COLLATE "C" NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    user_id text COLLATE "C" NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role_id text COLLATE "C" NOT NULL REFERENCES roles(id),
    PRIMARY KEY (project_id, user_id, role_id)
);
CREATE INDEX user_assignments_user ON user_assignments(user_id);
CREATE TABLE group_assignments (
    project_id text COLLATE "C" NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    group_id text COLLATE "C" NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    role_id text COLLATE "C" NOT NULL REFERENCES roles(id),
    PRIMARY KEY (project_id, group_id, role_id)
);
CREATE INDEX group_assignments_group ON group_assignments(group_id);
CREATE TABLE domain_assignments (
    domain_id text COLLATE "C" NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
    user_id text COLLATE "C" NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role_id text COLLATE "C" NOT NULL REFERENCES roles(id),
    PRIMARY KEY (domain_id, user_id, role_id)
);
CREATE INDEX domain_assignments_user ON domain_assignments(user_id);
CREATE TABLE access_keys (
    access text COLLATE "C" PRIMARY KEY,
    user_id text COLLATE "C" NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    secret bytea NOT NULL,
    status text NOT NULL CHECK (status IN ('active', 'inactive')),
    description text NOT NULL,
    created_at bigint NOT NULL,
    last_use_at bigint
);
CREATE INDEX access_keys_user ON access_keys(user_id);
CREATE TABLE tokens (
    hash text COLLATE "C" PRIMARY KEY,
    user_id text COLLATE "C" NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    project_id text COLLATE "C" REFERENCES projects(id) ON DELETE CASCADE,
    domain_id text COLLATE "C" REFERENCES domains(id) ON DELETE CASCADE,
    issued_at bigint NOT NULL,
    expires_at bigint NOT NULL,
    revoked bigint NOT NULL CHECK (revoked IN (0, 1)),
    methods text NOT NULL
);
CREATE INDEX tokens_expiry ON tokens(expires_at);
CREATE INDEX tokens_user ON tokens(user_id);
CREATE TABLE login_lockouts (
    user_id text COLLATE "C" NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    source text COLLATE "C" NOT NULL,
    locked_until bigint NOT NULL,
    PRIMARY KEY (user_id, source)
);
