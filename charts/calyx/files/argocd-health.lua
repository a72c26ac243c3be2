-- Argo CD health check for leases.calyx.io and rollouts.calyx.io (docs/gitops.md).
-- The same script serves both keys of argocd-cm:
--   resource.customizations.health.calyx.io_Lease
--   resource.customizations.health.calyx.io_Rollout
-- It reads the kstatus conditions Ready / Reconciling / Stalled when they describe the current
-- spec (observedGeneration == metadata.generation), and the summary phase otherwise.
-- Lua 5.1 (Argo CD's gopher-lua); tests/unit/test_argocd_health.py runs it on real objects.

local hs = { status = "Progressing", message = "waiting for the Calyx operator" }

local status = obj.status
if status == nil then
  return hs
end
local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
local phase = status.phase
local message = status.message
if message == nil or message == "" then
  message = phase
end

-- A person's move, not a failure: Argo CD's Suspended.
local suspended = { Paused = true, WaitingForApproval = true }

local function condition(kind)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function current(c)
  return c ~= nil and (generation == nil or c.observedGeneration == generation)
end

local function text(c)
  if c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if message ~= nil then
    return message
  end
  return c.reason
end

-- A status written for an older spec says nothing about this one.
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "waiting for the Calyx operator to observe generation " .. generation
  return hs
end

local ready = condition("Ready")
local stalled = condition("Stalled")
local reconciling = condition("Reconciling")
if current(ready) and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = text(ready)
  return hs
end
if current(stalled) and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = text(stalled)
  return hs
end
if current(reconciling) and reconciling.status == "True" then
  if obj.kind == "Rollout" and suspended[phase] then
    hs.status = "Suspended"
  else
    hs.status = "Progressing"
  end
  hs.message = text(reconciling)
  return hs
end

-- No (current) kstatus conditions: an older operator, or none written yet.
local healthy = { Lease = { Verified = true, Consumed = true }, Rollout = { Completed = true } }
local degraded = {
  Lease = { Rejected = true, Expired = true },
  Rollout = { RolledBack = true, Failed = true },
}
local kind = obj.kind
if phase == nil then
  return hs
end
if healthy[kind] ~= nil and healthy[kind][phase] then
  hs.status = "Healthy"
elseif degraded[kind] ~= nil and degraded[kind][phase] then
  hs.status = "Degraded"
elseif kind == "Rollout" and suspended[phase] then
  hs.status = "Suspended"
else
  hs.status = "Progressing"
end
hs.message = message
return hs
