# Start the Prefect process worker for the MT5 terminals of this host.
# Run as the logged-in worker user (Task Scheduler, "Run only when user is logged on");
# see docs/windows-runbook.md. Secrets come from the user's environment or C:\mt5-sync\.env,
# never from this file.
param(
    [string]$Pool = "mt5-windows",
    [string]$HostName = "",
    [string]$ProjectDir = (Split-Path -Parent (Split-Path -Parent $PSScriptRoot))
)
$ErrorActionPreference = "Stop"
Set-Location $ProjectDir
. (Join-Path $ProjectDir ".venv\Scripts\Activate.ps1")
$env:PYTHONUTF8 = "1"                       # Prefect issue 15330
$env:MT5SYNC_PROJECT_DIR = $ProjectDir
# mt5-sync worker: checks the terminal paths, creates this host's work queue if missing, then
# runs `prefect worker start --pool <pool> --work-queue <host> --work-queue default`.
if (-not $HostName) { $HostName = $env:COMPUTERNAME.ToLower() }
$arguments = @("worker", "--pool", $Pool, "--host", $HostName)
$logDir = Join-Path $env:LOCALAPPDATA "mt5-sync\logs"
New-Item -ItemType Directory -Force $logDir | Out-Null
$log = Join-Path $logDir ("worker-{0:yyyyMMdd}.log" -f (Get-Date))
& mt5-sync @arguments *>> $log
exit $LASTEXITCODE
