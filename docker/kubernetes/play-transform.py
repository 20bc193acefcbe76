"""Turns docker/kubernetes/sidecar.yaml into what podman 4.3's `kube play` can run here: only the
Deployment, with the ConfigMap, Secret and emptyDir volumes as hostPath directories (Secret
volumes crash it; the files are written by docker/check), and the image under test.

Usage: python3 play-transform.py SIDECAR_YAML WORK_DIR IMAGE > play.yaml
"""

import sys

import yaml

source, work, image = sys.argv[1:4]
docs = [d for d in yaml.safe_load_all(open(source)) if d]
config = next(d for d in docs if d["kind"] == "ConfigMap")
deployment = next(d for d in docs if d["kind"] == "Deployment")
open(f"{work}/config/config.toml", "w").write(config["data"]["config.toml"])
pod = deployment["spec"]["template"]["spec"]
for volume in pod["volumes"]:
    volume.pop("configMap", None)
    volume.pop("secret", None)
    volume.pop("emptyDir", None)
    volume["hostPath"] = {"path": f"{work}/{volume['name']}", "type": "Directory"}
for container in pod["containers"]:
    container["image"] = image
yaml.safe_dump(deployment, sys.stdout, sort_keys=False)
