#!/usr/bin/env python
"""Split a prompt set into K groups by K-means of their text embeddings, as multi-student distillation
(Song et al., arXiv 2410.23274) assigns prompts to students, and write the centroid file the Route
Prompts to Students node reads (route = centroids), so students fine-tuned on the K groups are routed
the way they were trained.

    python custom_nodes/comfyui-student-teacher/tools/split_prompts.py \\
        --checkpoint v1-5-pruned-emaonly.safetensors --prompts my_prompts.txt --k 4 --balanced --name coco4

Boots ComfyUI in this process (tools/comfyui_boot.py), embeds every prompt with the checkpoint's own
CLIP (its pooled output, what the router compares), runs spherical K-means (k-means++ from --seed;
--balanced: equal-size groups, as MSD uses) and writes to ComfyUI/models/student_teacher_routing/:
<name>.json (the centroids) and <name>_group<k>.txt (each group's prompts, to fine-tune student k on).
Nothing is overwritten: an existing name stops the tool.
"""
import argparse
import os
import sys

PACK = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if PACK not in sys.path:
    sys.path.insert(0, PACK)
from tools.comfyui_boot import boot  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--comfyui", default=os.path.dirname(os.path.dirname(PACK)),
                   help="ComfyUI folder (default: the one whose custom_nodes/ holds this pack)")
    p.add_argument("--extra-model-paths-config", help="an extra_model_paths.yaml, as ComfyUI takes it")
    p.add_argument("--checkpoint", required=True, help="checkpoint in models/checkpoints whose CLIP embeds the prompts")
    p.add_argument("--prompts", required=True, help="text file, one prompt per line")
    p.add_argument("--k", type=int, required=True, help="number of groups (students)")
    p.add_argument("--balanced", action="store_true", help="equal-size groups")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", required=True, help="writes models/student_teacher_routing/<name>.json")
    p.add_argument("--out-dir", help="where to write (default: models/student_teacher_routing/)")
    a = p.parse_args(argv)
    with open(a.prompts, encoding="utf-8") as f:
        prompts = [line.strip() for line in f if line.strip()]
    default_paths = os.path.join(a.comfyui, "extra_model_paths.yaml")
    comfy = boot(a.comfyui, extra_model_paths=[c for c in (default_paths if os.path.exists(default_paths) else None,
                                                            a.extra_model_paths_config) if c])
    import folder_paths
    import nodes
    routing = sys.modules[comfy.pack_module.__name__ + ".schedulers.routing"]
    embed = sys.modules[comfy.pack_module.__name__ + ".nodes.prompts"].prompt_embeddings
    clip = nodes.CheckpointLoaderSimple().load_checkpoint(a.checkpoint)[1]
    labels, centroids = routing.kmeans(embed(clip, prompts), a.k, seed=a.seed, balanced=a.balanced)
    out = a.out_dir or folder_paths.get_folder_paths("student_teacher_routing")[0]
    os.makedirs(out, exist_ok=True)
    targets = [os.path.join(out, a.name + ".json")] + [os.path.join(out, f"{a.name}_group{g + 1}.txt")
                                                        for g in range(a.k)]
    taken = [t for t in targets if os.path.exists(t)]
    if taken:
        raise SystemExit(f"{os.path.basename(taken[0])} exists already in {out}; choose another --name")
    sizes = [int((labels == g).sum()) for g in range(a.k)]
    routing.write_centroids(targets[0], centroids, sizes, encoder=f"{a.checkpoint} CLIP, pooled output")
    for g in range(a.k):
        with open(targets[g + 1], "x", encoding="utf-8") as f:
            f.write("\n".join(p for p, lab in zip(prompts, labels.tolist()) if lab == g) + "\n")
    print(f"wrote {targets[0]}: {a.k} groups of {sizes} prompts, and their prompt lists")
    return 0


if __name__ == "__main__":
    sys.exit(main())
