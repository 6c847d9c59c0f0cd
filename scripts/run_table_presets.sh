#!/usr/bin/env bash
# The appendix experiments on the prepared Sunnybrook data, one after the other, each reusing the
# finished stages of study-sunnybrook-4x whose settings match (same teacher, student, SFT teacher,
# seeds). Hours on 2 CPU cores (estimates in each preset's comment): start it in the background,
#   nohup bash scripts/run_table_presets.sh >> runs/table-presets.log 2>&1 &
# and run it again to continue: every `kdrecon run` resumes where it stopped.
set -euo pipefail
study=runs/study-sunnybrook-4x
phases=(0 2 4 6 8 10 12 14 16 18)
[ -d datasets/sunnybrook-4x ] || kdrecon prepare sunnybrook ../shared/data/sunnybrook datasets/sunnybrook-4x --phases "${phases[@]}"
[ -d datasets/sunnybrook-5x ] || kdrecon prepare sunnybrook ../shared/data/sunnybrook datasets/sunnybrook-5x --acceleration 5x --phases "${phases[@]}"
kdrecon run kd-mri-sunnybrook-4x --reuse-from "$study"
kdrecon run compression-sunnybrook-4x --reuse-from "$study"
kdrecon run fine-tune-sunnybrook-5x
kdrecon run conventional-sft-sunnybrook-4x
kdrecon run heterogeneous-sunnybrook-4x --reuse-from "$study"
