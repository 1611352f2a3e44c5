# What the guest reads: where to report that {{ host.name }} booted.
HOST={{ host.name }}
CHECKPOINT={{ urls.checkpoint }}
