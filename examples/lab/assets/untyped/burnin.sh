#!/bin/sh
# Burn-in for {{ host.name }}: stress for {{ md.burnin_minutes }} minutes, then report.
set -eu
apk add --no-cache stress-ng smartmontools curl
stress-ng --cpu 0 --vm 2 --vm-bytes 75% --timeout {{ md.burnin_minutes }}m --metrics-brief
{% include "snippets/report.sh" %}
