/**
 * Schema migrations, applied in order; `PRAGMA user_version` records how many ran. Append only:
 * a released migration is never edited.
 */
export const MIGRATIONS: readonly string[] = [
  // 1: templates, sandboxes, snapshots, operations journal, bounded events
  `
  CREATE TABLE templates (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    image_key   TEXT NOT NULL,
    memory_mib  INTEGER NOT NULL CHECK (memory_mib > 0),
    vcpus       INTEGER NOT NULL CHECK (vcpus > 0),
    snapshot_id TEXT,
    created_at  TEXT NOT NULL
  ) STRICT;

  CREATE TABLE snapshots (
    id          TEXT PRIMARY KEY,
    sandbox_id  TEXT,
    template_id TEXT NOT NULL,
    memory_mib  INTEGER NOT NULL,
    vcpus       INTEGER NOT NULL,
    parent_id   TEXT REFERENCES snapshots(id),
    artifacts   TEXT NOT NULL,
    created_at  TEXT NOT NULL
  ) STRICT;
  CREATE INDEX snapshots_parent ON snapshots(parent_id);

  CREATE TABLE sandboxes (
    id                 TEXT PRIMARY KEY,
    template_id        TEXT NOT NULL REFERENCES templates(id),
    state              TEXT NOT NULL,
    memory_mib         INTEGER NOT NULL CHECK (memory_mib > 0),
    vcpus              INTEGER NOT NULL CHECK (vcpus > 0),
    metadata           TEXT NOT NULL,
    env_vars           TEXT NOT NULL,
    access_token       TEXT NOT NULL,
    created_at         TEXT NOT NULL,
    started_at         TEXT,
    end_at             TEXT NOT NULL,
    auto_pause         INTEGER NOT NULL,
    allow_internet     INTEGER NOT NULL,
    end_reason         TEXT,
    source_snapshot_id TEXT REFERENCES snapshots(id)
  ) STRICT;
  CREATE INDEX sandboxes_state ON sandboxes(state);
  CREATE INDEX sandboxes_source ON sandboxes(source_snapshot_id);

  CREATE TABLE operations (
    id         TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    subject    TEXT NOT NULL,
    request_id TEXT,
    state      TEXT NOT NULL,
    steps      TEXT NOT NULL,
    error      TEXT,
    started_at TEXT NOT NULL,
    ended_at   TEXT
  ) STRICT;
  CREATE INDEX operations_open ON operations(state) WHERE state = 'running';

  CREATE TABLE events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    sandbox_id TEXT NOT NULL REFERENCES sandboxes(id) ON DELETE CASCADE,
    at         TEXT NOT NULL,
    level      TEXT NOT NULL,
    message    TEXT NOT NULL,
    data       TEXT
  ) STRICT;
  CREATE INDEX events_sandbox ON events(sandbox_id, seq);
  `,
  // 2: named, kinded snapshots that remember the guest agent's token; auto-resume; API keys
  `
  ALTER TABLE snapshots ADD COLUMN name TEXT;
  ALTER TABLE snapshots ADD COLUMN kind TEXT NOT NULL DEFAULT 'template';
  ALTER TABLE snapshots ADD COLUMN guest_token TEXT;
  ALTER TABLE snapshots ADD COLUMN pause_ms REAL;
  CREATE UNIQUE INDEX snapshots_name ON snapshots(name) WHERE name IS NOT NULL;

  ALTER TABLE sandboxes ADD COLUMN auto_resume INTEGER NOT NULL DEFAULT 0;

  CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    key_hash     TEXT NOT NULL UNIQUE,
    prefix       TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    last_used_at TEXT
  ) STRICT;
  `,
  // 3: API keys are scoped: objects remember the key that made them; admin keys see everything.
  // The key \`kiln e2b env\` made for the local user becomes an admin key; other keys do not.
  // Objects made before have no owner: admin keys (and the native API) only.
  `
  ALTER TABLE api_keys ADD COLUMN admin INTEGER NOT NULL DEFAULT 0;
  UPDATE api_keys SET admin = 1 WHERE name = 'e2b-env';
  ALTER TABLE sandboxes ADD COLUMN owner_key_id TEXT;
  ALTER TABLE snapshots ADD COLUMN owner_key_id TEXT;
  ALTER TABLE templates ADD COLUMN owner_key_id TEXT;
  CREATE INDEX sandboxes_owner ON sandboxes(owner_key_id);
  `,
  // 4: a sandbox's condition (unresponsive, disk_full, vm_stopped) as JSON, or NULL
  `
  ALTER TABLE sandboxes ADD COLUMN condition TEXT;
  `,
  // 5: when a sandbox became dead, for retention (purgeEnded). Sandboxes already dead get the
  // time of the upgrade: they are purged one retention period after it.
  `
  ALTER TABLE sandboxes ADD COLUMN ended_at TEXT;
  UPDATE sandboxes SET ended_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE state = 'dead';
  CREATE INDEX sandboxes_ended ON sandboxes(ended_at) WHERE state = 'dead';
  `,
  // 6: a user's snapshot and its disk layer part: deleting a snapshot hides it at once (and frees
  // its name); its record stays as a layer until nothing stands on it.
  `
  ALTER TABLE snapshots ADD COLUMN deleted_at TEXT;
  CREATE INDEX snapshots_deleted ON snapshots(deleted_at) WHERE deleted_at IS NOT NULL;
  `,
  // 7: a sandbox's network rules (JSON: core/network-policy.ts SandboxNetwork) and its traffic
  // access token (E2B's trafficAccessToken). Older rows have neither: they read as OPEN_NETWORK
  // with internet = allow_internet (which stays, kept equal to the rules' internet flag).
  `
  ALTER TABLE sandboxes ADD COLUMN network TEXT;
  ALTER TABLE sandboxes ADD COLUMN traffic_token TEXT;
  `,
  // 8: filesystem-only pauses (issue 13): what a paused sandbox's pause kept, and what its
  // timeout's pause keeps (E2B's autoPauseMemory). Sandboxes paused before kept memory.
  `
  ALTER TABLE sandboxes ADD COLUMN pause_kind TEXT;
  ALTER TABLE sandboxes ADD COLUMN auto_pause_memory INTEGER NOT NULL DEFAULT 1;
  UPDATE sandboxes SET pause_kind = 'memory' WHERE state IN ('pausing', 'paused');
  `,
  // 9: volumes (E2B's volumes: a host directory per volume, its content-API token) and the
  // volumes each sandbox mounts (index = the mount's guest port offset).
  `
  CREATE TABLE volumes (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    token        TEXT NOT NULL UNIQUE,
    created_at   TEXT NOT NULL,
    owner_key_id TEXT
  ) STRICT;
  CREATE TABLE volume_mounts (
    sandbox_id TEXT NOT NULL REFERENCES sandboxes(id) ON DELETE CASCADE,
    volume_id  TEXT NOT NULL REFERENCES volumes(id) ON DELETE CASCADE,
    path       TEXT NOT NULL,
    idx        INTEGER NOT NULL,
    PRIMARY KEY (sandbox_id, idx)
  ) STRICT;
  CREATE INDEX volume_mounts_volume ON volume_mounts(volume_id);
  `,
  // 10: template builds (issue 14): each build's definition, state, builder sandbox and the
  // layer snapshots its template stands on; its log lines, so status answers after a restart.
  `
  CREATE TABLE template_builds (
    id            TEXT PRIMARY KEY,
    template_id   TEXT NOT NULL,
    template_name TEXT NOT NULL,
    owner_key_id  TEXT,
    tags          TEXT NOT NULL,
    status        TEXT NOT NULL,
    vcpus         INTEGER,
    memory_mib    INTEGER,
    spec          TEXT,
    reason        TEXT,
    builder_id    TEXT,
    layers        TEXT NOT NULL,
    snapshot_id   TEXT,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    finished_at   TEXT
  ) STRICT;
  CREATE INDEX template_builds_template ON template_builds(template_id, created_at);
  CREATE TABLE template_build_logs (
    build_id  TEXT NOT NULL REFERENCES template_builds(id) ON DELETE CASCADE,
    seq       INTEGER NOT NULL,
    ts        TEXT NOT NULL,
    level     TEXT NOT NULL,
    message   TEXT NOT NULL,
    step      TEXT,
    PRIMARY KEY (build_id, seq)
  ) STRICT;
  `,
  // 11: the warm pool (issue 15): per-template pool sizes set through the API (a template's
  // deletion removes its size), and the pool's members (VMs restored ahead of creates; not
  // sandboxes, so no list shows them).
  `
  CREATE TABLE template_pools (
    template_id TEXT PRIMARY KEY REFERENCES templates(id) ON DELETE CASCADE,
    size        INTEGER NOT NULL CHECK (size >= 0)
  ) STRICT;
  CREATE TABLE pool_vms (
    id          TEXT PRIMARY KEY,
    template_id TEXT NOT NULL,
    snapshot_id TEXT NOT NULL,
    memory_mib  INTEGER NOT NULL CHECK (memory_mib > 0),
    state       TEXT NOT NULL CHECK (state IN ('starting', 'ready')),
    created_at  TEXT NOT NULL
  ) STRICT;
  CREATE INDEX pool_vms_template ON pool_vms(template_id, state, created_at);
  `,
  // 12: template garbage collection (issue 14): when each snapshot was last used (a build's
  // cache hit, a parent, something standing on it), so hidden layers and templates go only
  // after a grace period without use. A snapshot never used since it was made has no row: its
  // creation time counts.
  `
  CREATE TABLE snapshot_uses (
    snapshot_id TEXT PRIMARY KEY REFERENCES snapshots(id) ON DELETE CASCADE,
    used_at     TEXT NOT NULL
  ) STRICT;
  `,
  // 13: the machine revision each snapshot's memory was saved from (vmm/driver.ts
  // MACHINE_REVISION): snapshots taken before revisions are of the legacy machine (1), with the PIT.
  `
  ALTER TABLE snapshots ADD COLUMN machine INTEGER NOT NULL DEFAULT 1 CHECK (machine >= 1);
  `,
];
