//! The two Lua scripts — one commit, one bounded prune step — and the code
//! that runs them. Redis runs a script at a time, so a commit's
//! preconditions and writes are atomic and versions are gap-free across
//! replicas.

use redis::{Script, ScriptInvocation};

use super::Inner;
use super::codec::{corrupt, encode, set_version};
use super::conn::within;
use crate::model::{AuditEvent, Change, ChangeKind, ForeignKey, MAX_FOREIGN_KEYS};
use crate::store::{Batch, Committed, Pruned, Retention, StoreError, Write};

/// One commit: preconditions, then writes. See the module documentation.
///
/// KEYS: 1 version, 2 log, 3 revocations, 4 revocations:by_version,
/// 5 revocations:by_expiry, 6 assets, 7 assets:ids, 8 assets:revision,
/// 9 signing_keys, 10 api_keys, 11 api_keys:names, 12 audit, 13 audit:seq,
/// 14 purges, 15 purges:by_expiry, 16 foreign_keys. An `append` carries the change, the
/// record for a live set (a revocation or a purge, or empty), its expiry and
/// which set (`r` or `p`).
/// ARGV: audit MAXLEN bound, number of writes, the writes (tag and fixed
/// fields each), then (`at`, event JSON) pairs for the audit stream.
/// Returns `{"ok", first version, first audit seq}`, or
/// `{"conflict", message}` / `{"corrupt", message}` having written nothing.
pub(super) const COMMIT: &str = r#"
local cap = ARGV[1]
local nwrites = tonumber(ARGV[2])
local i = 3
local ops = {}
for _ = 1, nwrites do
  local tag = ARGV[i]
  if tag == 'asset' then ops[#ops + 1] = {tag, ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]}; i = i + 5
  elseif tag == 'key' then ops[#ops + 1] = {tag, ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]}; i = i + 4
  elseif tag == 'append' then ops[#ops + 1] = {tag, ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]}; i = i + 5
  elseif tag == 'apikey' then ops[#ops + 1] = {tag, ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]}; i = i + 4
  elseif tag == 'delapikey' then ops[#ops + 1] = {tag, ARGV[i + 1]}; i = i + 2
  elseif tag == 'fkey' then ops[#ops + 1] = {tag, ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]}; i = i + 5
  elseif tag == 'delfkey' then ops[#ops + 1] = {tag, ARGV[i + 1]}; i = i + 2
  else return redis.error_reply('ERR stile commit: unknown write ' .. tostring(tag)) end
end

-- Preconditions, against the state the earlier writes of this batch leave.
local asset_rev, key_exists, name_hash, hash_taken, fkeys = {}, {}, {}, {}, nil
local appends = 0
-- Foreign keys by field, read once and kept current with this batch's writes.
local function foreign()
  if fkeys == nil then
    fkeys = {}
    for _, f in ipairs(redis.call('HKEYS', KEYS[16])) do fkeys[f] = true end
  end
  return fkeys
end
for _, op in ipairs(ops) do
  local tag = op[1]
  if tag == 'asset' then
    local cur = asset_rev[op[2]]
    if cur == nil then cur = redis.call('HGET', KEYS[8], op[2]) or '0' end
    if cur ~= op[3] then
      return {'conflict', 'asset "' .. op[2] .. '" changed concurrently (revision ' .. cur .. ', expected ' .. op[3] .. ')'}
    end
    asset_rev[op[2]] = op[4]
  elseif tag == 'key' then
    local exists = key_exists[op[2]]
    if exists == nil then exists = redis.call('HEXISTS', KEYS[9], op[2]) == 1 end
    if op[3] == '1' and exists then return {'conflict', 'signing key ' .. op[2] .. ' already exists'} end
    if op[3] ~= '1' and not exists then return {'conflict', 'signing key ' .. op[2] .. ' does not exist'} end
    key_exists[op[2]] = true
  elseif tag == 'append' then
    appends = appends + 1
  elseif tag == 'apikey' then
    local h = name_hash[op[2]]
    if h == nil then h = redis.call('HGET', KEYS[11], op[2]) end
    if h then return {'conflict', 'API key name "' .. op[2] .. '" is taken'} end
    local taken = hash_taken[op[3]]
    if taken == nil then taken = redis.call('HEXISTS', KEYS[10], op[3]) == 1 end
    if taken then return {'conflict', 'API key hash collision'} end
    name_hash[op[2]] = op[3]
    hash_taken[op[3]] = true
  elseif tag == 'delapikey' then
    local h = name_hash[op[2]]
    if h == nil then h = redis.call('HGET', KEYS[11], op[2]) end
    if not h then return {'conflict', 'API key "' .. op[2] .. '" does not exist'} end
    name_hash[op[2]] = false
    hash_taken[h] = false
  elseif tag == 'fkey' then
    local held = foreign()
    if held[op[2]] then return {'conflict', op[2] .. ' already exists'} end
    local n = 0
    for f, _ in pairs(held) do
      if string.sub(f, 1, #op[3]) == op[3] then n = n + 1 end
    end
    if n >= tonumber(op[4]) then return {'conflict', op[3] .. 'holds ' .. op[4] .. ' keys already'} end
    held[op[2]] = true
  elseif tag == 'delfkey' then
    local held = foreign()
    if not held[op[2]] then return {'conflict', op[2] .. ' does not exist'} end
    held[op[2]] = nil
  end
end

-- The counters must be ahead of their streams, or XADD would fail half-way.
local function top(stream)
  local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)[1]
  if last then return tonumber(string.match(last[1], '^(%d+)-')) end
  return 0
end
local version = tonumber(redis.call('GET', KEYS[1]) or '0')
if appends > 0 and top(KEYS[2]) > version then
  return {'corrupt', 'the log stream is ahead of the version counter ' .. version}
end
local nevents = (#ARGV - i + 1) / 2
if nevents > 0 and top(KEYS[12]) > tonumber(redis.call('GET', KEYS[13]) or '0') then
  return {'corrupt', 'the audit stream is ahead of its sequence counter'}
end

-- Writes.
local first = version + 1
for _, op in ipairs(ops) do
  if op[1] == 'append' then
    version = version + 1
    local v = string.format('%d', version)
    redis.call('XADD', KEYS[2], v .. '-0', 'change', op[2])
    if op[5] == 'r' then
      redis.call('HSET', KEYS[3], v, op[3])
      redis.call('ZADD', KEYS[4], v, v)
      redis.call('ZADD', KEYS[5], op[4], v)
    elseif op[5] == 'p' then
      redis.call('HSET', KEYS[14], v, op[3])
      redis.call('ZADD', KEYS[15], op[4], v)
    end
  end
end
if version >= first then redis.call('SET', KEYS[1], string.format('%d', version)) end
for _, op in ipairs(ops) do
  local tag = op[1]
  if tag == 'asset' then
    redis.call('HSET', KEYS[6], op[2], op[5])
    redis.call('HSET', KEYS[8], op[2], op[4])
    redis.call('ZADD', KEYS[7], 0, op[2])
  elseif tag == 'key' then
    redis.call('HSET', KEYS[9], op[2], op[4])
  elseif tag == 'apikey' then
    redis.call('HSET', KEYS[11], op[2], op[3])
    redis.call('HSET', KEYS[10], op[3], op[4])
  elseif tag == 'delapikey' then
    local h = redis.call('HGET', KEYS[11], op[2])
    redis.call('HDEL', KEYS[11], op[2])
    redis.call('HDEL', KEYS[10], h)
  elseif tag == 'fkey' then
    redis.call('HSET', KEYS[16], op[2], op[5])
  elseif tag == 'delfkey' then
    redis.call('HDEL', KEYS[16], op[2])
  end
end
local seq0 = 0
if nevents > 0 then
  local seq = redis.call('INCRBY', KEYS[13], nevents) - nevents
  seq0 = seq + 1
  for j = i, #ARGV, 2 do
    seq = seq + 1
    redis.call('XADD', KEYS[12], 'MAXLEN', '~', cap, string.format('%d-0', seq), 'at', ARGV[j], 'event', ARGV[j + 1])
  end
end
return {'ok', string.format('%d', first), string.format('%d', seq0)}
"#;

/// One bounded step of pruning; the caller repeats while it reports more.
///
/// KEYS: 1 revocations, 2 by_version, 3 by_expiry, 4 log, 5 audit, 6 purges,
/// 7 purges:by_expiry, 8 purge_floor.
/// ARGV: now, log entries kept, audit events kept, oldest audit time kept.
/// Returns `{revocations, log entries, audit events, more, purges}`.
pub(super) const PRUNE: &str = r#"
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[1], 'LIMIT', 0, 5000)
for _, v in ipairs(expired) do
  redis.call('HDEL', KEYS[1], v)
  redis.call('ZREM', KEYS[2], v)
  redis.call('ZREM', KEYS[3], v)
end
local more = #expired == 5000
local dropped = redis.call('ZRANGEBYSCORE', KEYS[7], '-inf', ARGV[1], 'LIMIT', 0, 5000)
local floor = tonumber(redis.call('GET', KEYS[8]) or '0')
for _, v in ipairs(dropped) do
  redis.call('HDEL', KEYS[6], v)
  redis.call('ZREM', KEYS[7], v)
  if tonumber(v) > floor then floor = tonumber(v) end
end
if #dropped > 0 then redis.call('SET', KEYS[8], string.format('%d', floor)) end
if #dropped == 5000 then more = true end
local log = redis.call('XTRIM', KEYS[4], 'MAXLEN', ARGV[2])
local audit = redis.call('XTRIM', KEYS[5], 'MAXLEN', ARGV[3])
local min_at = tonumber(ARGV[4])
local old = {}
for _, e in ipairs(redis.call('XRANGE', KEYS[5], '-', '+', 'COUNT', 1000)) do
  local at = nil
  for f = 1, #e[2], 2 do if e[2][f] == 'at' then at = tonumber(e[2][f + 1]) end end
  if at ~= nil and at >= min_at then break end
  old[#old + 1] = e[1]
end
for _, id in ipairs(old) do audit = audit + redis.call('XDEL', KEYS[5], id) end
if #old == 1000 then more = true end
return {#expired, log, audit, more and 1 or 0, #dropped}
"#;

/// The compiled scripts (`EVALSHA`, loaded on first use).
#[derive(Debug)]
pub(super) struct Scripts {
    pub(super) commit: Script,
    pub(super) prune: Script,
}

impl Scripts {
    pub(super) fn new() -> Scripts {
        Scripts { commit: Script::new(COMMIT), prune: Script::new(PRUNE) }
    }
}

impl Inner {
    /// Runs the commit script, then (with `wait_replicas`) `WAIT`; returns the
    /// appended changes with their versions.
    pub(super) async fn commit(&self, batch: Batch) -> Result<Committed, StoreError> {
        // Mint audit events (no writes) need not be durable before the answer
        // (`Store::record_audit`): the read connection, no WAIT, so mints never
        // queue behind a commit's WAIT.
        let audit_only = batch.writes.is_empty();
        let (inv, appended) = self.commit_invocation(batch)?;
        let link = self.link.load();
        let mut w = if audit_only { link.conn.clone() } else { link.writer.clone() };
        drop(link);
        let reply: Vec<String> = self.observe(within(self.settings.commit_timeout, inv.invoke_async(&mut w)).await)?;
        match reply.first().map(String::as_str) {
            Some("ok") => {}
            Some("conflict") => return Err(StoreError::Conflict(reply.get(1).cloned().unwrap_or_default())),
            _ => {
                return Err(StoreError::Corrupt { table: "redis", message: reply.get(1).cloned().unwrap_or_default() });
            }
        }
        let first: u64 = reply.get(1).and_then(|v| v.parse().ok()).ok_or_else(|| corrupt("commit reply"))?;
        if self.settings.wait_replicas > 0 && !audit_only {
            let cmd = redis::cmd("WAIT").arg(self.settings.wait_replicas).arg(self.settings.wait_timeout_ms).clone();
            let acked: u32 = self.observe(within(self.settings.commit_timeout, cmd.query_async(&mut w)).await)?;
            if acked < self.settings.wait_replicas {
                return Err(StoreError::Unavailable(format!(
                    "the commit reached {acked} of {} Redis replicas within {} ms (store.redis.wait_replicas); \
                     it is on the primary and may still spread",
                    self.settings.wait_replicas, self.settings.wait_timeout_ms
                )));
            }
        }
        let changes = appended
            .into_iter()
            .zip(first..)
            .map(|(mut change, version)| {
                change.version = version;
                set_version(&mut change.kind, version);
                change
            })
            .collect();
        Ok(Committed { changes })
    }

    /// The commit script's KEYS and ARGV for `batch` (see [`COMMIT`]), and the
    /// changes it appends, versions still 0.
    fn commit_invocation(&self, batch: Batch) -> Result<(ScriptInvocation<'_>, Vec<Change>), StoreError> {
        let k = &self.keys;
        let mut inv = self.scripts.commit.prepare_invoke();
        for key in [
            &k.version,
            &k.log,
            &k.revocations,
            &k.revocations_by_version,
            &k.revocations_by_expiry,
            &k.assets,
            &k.asset_ids,
            &k.asset_revisions,
            &k.signing_keys,
            &k.api_keys,
            &k.api_key_names,
            &k.audit,
            &k.audit_seq,
            &k.purges,
            &k.purges_by_expiry,
            &k.foreign_keys,
        ] {
            inv.key(key);
        }
        inv.arg(self.settings.audit_cap).arg(batch.writes.len());
        let mut appended = Vec::new();
        for write in batch.writes {
            match write {
                Write::PutAsset { asset, expected_revision } => {
                    inv.arg("asset").arg(&asset.id).arg(expected_revision).arg(asset.revision).arg(encode(&asset)?);
                }
                Write::PutKey { key, create } => {
                    inv.arg("key").arg(key.id).arg(if create { "1" } else { "0" }).arg(encode(&key)?);
                }
                Write::Append { at, actor, mut kind } => {
                    let (record, expires_at, set) = match &mut kind {
                        ChangeKind::Revocation(r) => {
                            r.version = 0;
                            (encode(r)?, r.expires_at, "r")
                        }
                        ChangeKind::Purge(p) => {
                            p.version = 0;
                            (encode(p)?, p.expires_at, "p")
                        }
                        ChangeKind::Key { .. } | ChangeKind::ForeignKey { .. } => (Vec::new(), 0, ""),
                    };
                    let change = Change { version: 0, at, actor, kind };
                    inv.arg("append").arg(encode(&change)?).arg(record).arg(expires_at).arg(set);
                    appended.push(change);
                }
                Write::PutApiKey(key) => {
                    inv.arg("apikey").arg(&key.name).arg(hex::encode(key.sha256)).arg(encode(&key)?);
                }
                Write::DeleteApiKey { name } => {
                    inv.arg("delapikey").arg(name);
                }
                Write::PutForeignKey(key) => {
                    // The field, the prefix every key of its format has, the bound, the record.
                    inv.arg("fkey")
                        .arg(ForeignKey::id(&key.format, &key.name))
                        .arg(ForeignKey::id(&key.format, ""))
                        .arg(MAX_FOREIGN_KEYS)
                        .arg(encode(&key)?);
                }
                Write::DeleteForeignKey { format, name } => {
                    inv.arg("delfkey").arg(ForeignKey::id(&format, &name));
                }
            }
        }
        for event in &batch.audit {
            inv.arg(event.at).arg(encode(&AuditEvent { seq: 0, ..event.clone() })?);
        }
        Ok((inv, appended))
    }

    /// Prunes in bounded steps until nothing is left to prune.
    pub(super) async fn prune(&self, now: u64, retention: Retention) -> Result<Pruned, StoreError> {
        // Buffered mint audit events go first, so they are pruned like the rest.
        self.flush_audit().await?;
        let k = &self.keys;
        let min_at = now.saturating_sub(retention.audit_max_age_secs);
        let mut pruned = Pruned::default();
        loop {
            let mut inv = self.scripts.prune.prepare_invoke();
            inv.key(&k.revocations)
                .key(&k.revocations_by_version)
                .key(&k.revocations_by_expiry)
                .key(&k.log)
                .key(&k.audit)
                .key(&k.purges)
                .key(&k.purges_by_expiry)
                .key(&k.purge_floor)
                .arg(now)
                .arg(retention.log_entries)
                .arg(retention.audit_events)
                .arg(min_at);
            let mut c = self.link.load().conn.clone();
            let (revocations, log, audit, more, purges): (u64, u64, u64, u8, u64) =
                self.observe(within(self.settings.read_timeout, inv.invoke_async(&mut c)).await)?;
            pruned.revocations += revocations;
            pruned.purges += purges;
            pruned.log_entries += log;
            pruned.audit_events += audit;
            if more == 0 {
                return Ok(pruned);
            }
        }
    }
}
