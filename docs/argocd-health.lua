-- Argo CD health check for modelrollout.io/ModelRollout (Lua 5.1, as Argo CD runs it).
-- Reads the kstatus conditions (Ready, Reconciling, Stalled) with observedGeneration, the
-- Applied condition and status.phase. Paste under resource.customizations.health.modelrollout.io_ModelRollout.
local hs = {}

local function condition(kind)
  if obj.status ~= nil and obj.status.conditions ~= nil then
    for _, c in ipairs(obj.status.conditions) do
      if c.type == kind then
        return c
      end
    end
  end
  return nil
end

local function message(fallback)
  if obj.status ~= nil and obj.status.message ~= nil and obj.status.message ~= "" then
    return obj.status.message
  end
  return fallback
end

if obj.status == nil or obj.status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe the rollout"
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and obj.status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end

local phase = obj.status.phase
local applied = condition("Applied")
if applied ~= nil and applied.status == "False" then
  -- A concurrent edit or throttling clears on the next try; anything else needs a person.
  if applied.reason == "Conflict" or applied.reason == "Throttled" then
    hs.status = "Progressing"
    hs.message = "Retrying: " .. (applied.message or applied.reason)
  else
    hs.status = "Degraded"
    hs.message = "Cannot apply the decided state: " .. (applied.message or applied.reason or "")
  end
  return hs
end

local stalled = condition("Stalled")
if (stalled ~= nil and stalled.status == "True") or phase == "RolledBack" or phase == "InvalidSpec" or phase == "Degraded" then
  hs.status = "Degraded"
  hs.message = message(phase or "Stalled")
  return hs
end

if phase == "Paused" then
  hs.status = "Suspended"
  hs.message = message("Paused")
  return hs
end

local ready = condition("Ready")
if phase == "Succeeded" and (ready == nil or ready.status == "True") then
  hs.status = "Healthy"
  hs.message = message("Succeeded")
  return hs
end

hs.status = "Progressing"
hs.message = message(phase or "Reconciling")
return hs
