# Start the Prefect process worker for the MT5 terminals of this host.
# Run as the logged-in worker user (Task Scheduler, "Run only when user is logged on");
# see docs/windows-runbook.md. Secrets come from the user's environment or C:\mt5-sync\.env,
# never from this file.
param(
    [string]$Pool = "mt5-windows",
    [string]$WorkQueue = "",
    [string]$ProjectDir = (Split-Path -Parent (Split-Path -Parent $PSScriptRoot))
)
$ErrorActionPreference = "Stop"
Set-Location $ProjectDir
. (Join-Path $ProjectDir ".venv\Scripts\Activate.ps1")
$env:PYTHONUTF8 = "1"                       # Prefect issue 15330
$env:MT5SYNC_PROJECT_DIR = $ProjectDir
$arguments = @("worker", "start", "--pool", $Pool, "--name", $env:COMPUTERNAME)
if ($WorkQueue) { $arguments += @("--work-queue", $WorkQueue) }
$logDir = Join-Path $env:LOCALAPPDATA "mt5-sync\logs"
New-Item -ItemType Directory -Force $logDir | Out-Null
$log = Join-Path $logDir ("worker-{0:yyyyMMdd}.log" -f (Get-Date))
& prefect @arguments *>> $log
exit $LASTEXITCODE
