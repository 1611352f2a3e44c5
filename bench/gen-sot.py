#!/usr/bin/env python3
"""Generates a SoT of N hosts for bench/sot-scale.

It reuses examples/lab's operating systems, boots, workflows, classes and
assets (so every host renders real templates of every asset type) and
writes one site with N hosts, 1,000 per inventory file, spread over the
lab's workflows and classes.
"""
import os
import shutil
import sys

def main():
    n = int(sys.argv[1])
    out = sys.argv[2]
    lab = os.path.join(os.path.dirname(__file__), "..", "examples", "lab")
    if os.path.exists(out):
        shutil.rmtree(out)
    for d in ("os", "boot", "workflows", "classes", "assets"):
        shutil.copytree(os.path.join(lab, d), os.path.join(out, d))
    site = os.path.join(out, "sites", "bench")
    os.makedirs(site)
    with open(os.path.join(site, "env.yml"), "w") as f:
        f.write("""id: bench
agents:
  - id: bench-agent
    dhcp_mode: off
    asset_server: {url: "http://10.0.0.2:8080"}
subnets:
  - id: prov
    cidr: 10.0.0.0/8
    gateway: 10.0.0.1
    dns: [10.0.0.1]
    dhcp_options:
      - {option: 224, type: uint32, value: "3600"}
  - id: oob
    cidr: 11.0.0.0/8
    dns: [11.0.0.1]
metadata:
  k8s_api: https://10.0.0.10:6443
""")
    roles = [("role.k8s-worker", None), ("role.storage", None), (None, "bastion")]
    per_file = 1000
    for start in range(0, n, per_file):
        with open(os.path.join(site, f"hosts-{start // per_file:04d}.yml"), "w") as f:
            for i in range(start, min(n, start + per_file)):
                role, wf = roles[i % 3]
                rack = "rack.a" if i % 2 else "rack.b"
                classes = [rack] + ([role] if role else [])
                ip = 10 * 2**24 + 16 + i
                a, b, c = (ip >> 16) & 255, (ip >> 8) & 255, ip & 255
                f.write("---\n")
                f.write(f"name: node-{i:06d}\n")
                if wf:
                    f.write(f"workflow: {wf}\n")
                f.write(f"classes: [{', '.join(classes)}]\n")
                f.write(f"uuid: 00000000-0000-4000-8000-{i:012x}\n")
                f.write(f"metadata:\n  serial: SN{i:08d}\n")
                f.write("interfaces:\n")
                f.write(f"  - type: physical\n    mac: \"52:54:00:{(i >> 16) & 255:02x}:{(i >> 8) & 255:02x}:{i & 255:02x}\"\n")
                f.write(f"    subnet: prov\n    ipv4: 10.{a}.{b}.{c}\n    identifier: eno1\n")
                f.write(f"  - type: bmc\n    mac: \"52:55:00:{(i >> 16) & 255:02x}:{(i >> 8) & 255:02x}:{i & 255:02x}\"\n")
                f.write(f"    subnet: oob\n    ipv4: 11.{a}.{b}.{c}\n")
                f.write("    bmc: {type: ipmi, username: admin, password_env: BMC_PASSWORD}\n")

if __name__ == "__main__":
    main()
