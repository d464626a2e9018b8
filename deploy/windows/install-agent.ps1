<#
.SYNOPSIS
    Installs certkeep-agent on a Windows host, enrolls it, prepares the IIS Centralized Certificate
    Store (CCS) folder and starts the service. Run in an elevated PowerShell.

.DESCRIPTION
    1. Copies certkeep-agent.exe to %ProgramFiles%\certkeep.
    2. Creates %ProgramData%\certkeep (config, CA, state, logs) readable only by SYSTEM and
       Administrators: the agent's private key lives there.
    3. Creates the CCS folder if needed and grants the agent Modify on it (SYSTEM for a local
       folder, this computer's account DOMAIN\HOST$ for a UNC share), and Read to the CCS reader
       account if one is given. The CCS target itself is defined on the server
       (certkeep agent target add <agent> ccs --kind ccs --path <CcsPath>).
    4. Enrolls with the one-time join token (enroll writes agent.toml; no edit needed), syncs
       once, installs and starts the service.
    5. Prints the IIS commands to enable CCS and to add SNI + CCS bindings (sslFlags 3).

.EXAMPLE
    .\install-agent.ps1 -Server https://certkeep.example.net:8444 -CaFile .\ca.pem `
        -TokenFile .\join-token.txt -CcsPath \\files01\ccs$ -CcsReaderAccount CONTOSO\svc-ccs-read
#>
[CmdletBinding()]
param(
    # certkeep agent listener, e.g. https://certkeep.example.net:8444
    [Parameter(Mandatory)] [string] $Server,
    # certkeep's internal CA certificate (the server's <data_dir>\ca.pem)
    [Parameter(Mandatory)] [string] $CaFile,
    # File holding the one-time join token from the certkeep server
    [Parameter(Mandatory)] [string] $TokenFile,
    # CCS folder: local path or UNC share, e.g. \\files01\ccs$
    [Parameter(Mandatory)] [string] $CcsPath,
    # Account IIS reads the CCS folder as (Enable-WebCentralCertProvider -UserName); gets Read
    [string] $CcsReaderAccount,
    # The agent binary to install
    [string] $AgentExe = (Join-Path $PSScriptRoot 'certkeep-agent.exe')
)

$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

$principal = [Security.Principal.WindowsPrincipal][Security.Principal.WindowsIdentity]::GetCurrent()
if (-not $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)) {
    throw 'Run this script in an elevated PowerShell (as Administrator).'
}

$programFiles = Join-Path $env:ProgramFiles 'certkeep'
$dataDir = Join-Path $env:ProgramData 'certkeep'
$exe = Join-Path $programFiles 'certkeep-agent.exe'
$config = Join-Path $dataDir 'agent.toml'
$caCopy = Join-Path $dataDir 'ca.pem'
$stateDir = Join-Path $dataDir 'state'

function Invoke-Checked([string] $File, [string[]] $Arguments) {
    & $File @Arguments
    if ($LASTEXITCODE -ne 0) { throw "$File $($Arguments -join ' ') failed with exit code $LASTEXITCODE" }
}

# 1. Binary.
New-Item -ItemType Directory -Force -Path $programFiles | Out-Null
Copy-Item -Force -Path $AgentExe -Destination $exe

# 2. Data directory: SYSTEM and Administrators only, no inherited access.
#    (S-1-5-18 = SYSTEM, S-1-5-32-544 = Administrators; SIDs work on every display language.)
New-Item -ItemType Directory -Force -Path $dataDir, $stateDir, (Join-Path $dataDir 'logs') | Out-Null
Invoke-Checked icacls.exe @($dataDir, '/inheritance:r', '/grant:r', '*S-1-5-18:(OI)(CI)F', '*S-1-5-32-544:(OI)(CI)F')
Copy-Item -Force -Path $CaFile -Destination $caCopy

# 3. CCS folder. The agent writes as SYSTEM locally, as the computer account over SMB.
New-Item -ItemType Directory -Force -Path $CcsPath | Out-Null
$writer = if ($CcsPath.StartsWith('\\')) { "$env:USERDOMAIN\$env:COMPUTERNAME`$" } else { '*S-1-5-18' }
Invoke-Checked icacls.exe @($CcsPath, '/grant', "${writer}:(OI)(CI)M")
if ($CcsReaderAccount) {
    Invoke-Checked icacls.exe @($CcsPath, '/grant', "${CcsReaderAccount}:(OI)(CI)RX")
}
if ($CcsPath.StartsWith('\\')) {
    Write-Warning "Also give $writer Change (and $CcsReaderAccount Read) on the share itself."
}

# 4. Enrollment (writes the config), first sync, service.
Invoke-Checked $exe @('--config', $config, 'enroll', '--server', $Server, '--ca-file', $caCopy, '--token-file', $TokenFile)
Write-Host 'Enrolled. Delete the join token file now; it cannot be used again.'
& $exe --config $config sync
if ($LASTEXITCODE -ne 0) {
    Write-Warning "First sync reported failures; see '$exe --config $config status'. The service will retry."
}
if (-not (Get-Service -Name 'certkeep-agent' -ErrorAction SilentlyContinue)) {
    Invoke-Checked $exe @('--config', $config, 'service', 'install')
}
Invoke-Checked $exe @('service', 'start')
Write-Host "Service certkeep-agent started; logs in $dataDir\logs."

# 5. What to run on every IIS node that reads this CCS folder.
$reader = if ($CcsReaderAccount) { $CcsReaderAccount } else { 'DOMAIN\ccs-reader' }
Write-Host @"

On every IIS node (IIS 8 or later), in an elevated PowerShell:

  Install-WindowsFeature Web-CertProvider
  Enable-WebCentralCertProvider -CertStoreLocation '$CcsPath' -UserName '$reader' ``
      -Password (Read-Host 'password of $reader') -PrivateKeyPassword (Read-Host 'CCS password')

  # One HTTPS binding per host name: SNI + Centralized Certificate Store = sslFlags 3
  New-WebBinding -Name 'Default Web Site' -Protocol https -Port 443 -IPAddress * ``
      -HostHeader 'www.contoso.com' -SslFlags 3

  # Editing an existing binding: keep its higher bits (Server 2022+): flags -bor 3, never plain 3
  `$flags = [int](Get-WebBinding -Name 'Default Web Site' -Protocol https -HostHeader 'www.contoso.com').sslFlags
  Set-WebConfigurationProperty -PSPath 'IIS:\' -Name sslFlags -Value (`$flags -bor 3) ``
      -Filter "system.applicationHost/sites/site[@name='Default Web Site']/bindings/binding[@protocol='https' and @bindingInformation='*:443:www.contoso.com']"

Also import the intermediate CA certificates into LocalMachine\CA on each node, and check with a
TLS handshake (not the IIS Manager icon) that every host name serves the new thumbprint within
about 5 minutes (the CCS polling interval).
"@
