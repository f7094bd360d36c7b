-- Argo CD health check for cloudpilot.io/CloudPilotPool.
--
-- Install it in the argocd-cm ConfigMap (or the Helm values of Argo CD) under the key
--   resource.customizations.health.cloudpilot.io_CloudPilotPool
-- See docs/gitops.md. Tested under a real Lua runtime by tests/unit/test_argocd_health.py.
--
-- CloudPilot's status follows kstatus: status.observedGeneration at the top, a Ready
-- condition always present, Reconciling and Stalled present only while True. So:
--   no status, or an older observedGeneration  -> Progressing (the operator has not seen
--                                                 this spec yet)
--   Stalled=True                               -> Degraded (needs a human: bad credentials,
--                                                 invalid spec, image not found, quota)
--   ProxyExpiring=True                         -> Degraded (the pilot proxy expires within
--                                                 the warning margin, or has expired: only a
--                                                 human renewing its Secret fixes it, and
--                                                 Degraded is what Argo CD's notifications
--                                                 (on-health-degraded) and the UI flag;
--                                                 Progressing would say it resolves itself)
--   Reconciling=True                           -> Progressing (VMs being created or deleted,
--                                                 or retrying after a transient error)
--   Ready=True                                 -> Healthy
--   anything else                              -> Progressing
local hs = {}

local function condition(conditions, kind)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function describe(c, fallback)
  if c == nil then
    return fallback
  end
  local text = c.message
  if text == nil or text == "" then
    text = fallback
  end
  if c.reason ~= nil and c.reason ~= "" then
    return c.reason .. ": " .. text
  end
  return text
end

if obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  hs.message = "Deleting: waiting for the operator to release the pool (deletionPolicy)"
  return hs
end

local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
if status.observedGeneration == nil or (generation ~= nil and status.observedGeneration < generation) then
  hs.status = "Progressing"
  if generation ~= nil then
    hs.message = "Waiting for the operator to observe generation " .. string.format("%d", generation)
  else
    hs.message = "Waiting for the operator to observe the spec"
  end
  return hs
end

local stalled = condition(status.conditions, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(stalled, "Stalled")
  return hs
end

local expiring = condition(status.conditions, "ProxyExpiring")
if expiring ~= nil and expiring.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(expiring, "The pilot proxy expires soon: renew it")
  return hs
end

local reconciling = condition(status.conditions, "Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = describe(reconciling, "Reconciling")
  return hs
end

local ready = condition(status.conditions, "Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready, "Ready")
  return hs
end

hs.status = "Progressing"
if ready ~= nil then
  hs.message = describe(ready, "Not ready")
else
  hs.message = "Waiting for the Ready condition"
end
return hs
