"""Turns Kubernetes YAML (docker/kubernetes/sidecar.yaml, or the Helm chart rendered) into what
podman 4.3's `kube play` can run here: only the Deployment, every volume a hostPath directory
under WORK_DIR (Secret volumes crash it): a ConfigMap's or a rendered Secret's files written
there, other volumes empty (files already there, such as stand-in secrets, are kept), and the
image under test in every container. Prints the Deployment; its name goes to WORK_DIR/name.

Usage: python3 play-transform.py YAML WORK_DIR IMAGE > play.yaml
"""

import base64
import os
import sys

import yaml

source, work, image = sys.argv[1:4]
docs = [d for d in yaml.safe_load_all(open(source)) if d]
named = {(d["kind"], d["metadata"]["name"]): d for d in docs}
deployment = next(d for d in docs if d["kind"] == "Deployment")
pod = deployment["spec"]["template"]["spec"]
for volume in pod["volumes"]:
    directory = os.path.join(work, volume["name"])
    os.makedirs(directory, exist_ok=True)
    files = {}
    if "configMap" in volume:
        files = named[("ConfigMap", volume["configMap"]["name"])]["data"]
    elif "secret" in volume:
        secret = named.get(("Secret", volume["secret"]["secretName"]))
        if secret:
            files = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    for key, value in files.items():
        with open(os.path.join(directory, key), "w") as f:
            f.write(value)
    for kind in ("configMap", "secret", "emptyDir", "persistentVolumeClaim"):
        volume.pop(kind, None)
    volume["hostPath"] = {"path": directory, "type": "Directory"}
for container in pod["containers"]:
    container["image"] = image
with open(os.path.join(work, "name"), "w") as f:
    f.write(deployment["metadata"]["name"])
yaml.safe_dump(deployment, sys.stdout, sort_keys=False)
