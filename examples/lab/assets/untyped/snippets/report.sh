for dev in /dev/sd? /dev/nvme?n1; do [ -e "$dev" ] && smartctl -H "$dev" || true; done
curl -fsS --retry 10 --retry-connrefused -X POST "{{ urls.checkpoint }}"
