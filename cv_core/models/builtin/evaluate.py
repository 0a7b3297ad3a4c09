"""Quick, self-contained checks of the built-in model on ``digits``.

Zero-shot accuracy, a short fine-tuning of the image encoder against the frozen zero-shot
head, and forgetting each class by latent steering with its class vector. This is the
model's own check loop (used by the pretraining script and the model card); the product's
figures come from ``cv_core.pipeline``. Run ``python -m cv_core.models.builtin.evaluate``.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

MNIST_TEMPLATE = 'a photo of the number: "{}".'
DIGIT_NAMES = tuple(str(d) for d in range(10))


def preprocess_for(model):
    """open_clip's own eval transform for the model (Resize + CenterCrop + ToTensor + Normalize)."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    return image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)


def images_tensor(images: np.ndarray, preprocess) -> torch.Tensor:
    """(N, H, W) or (N, H, W, 3) uint8 -> (N, 3, S, S) float32 through ``preprocess`` as RGB PIL images."""
    return torch.stack([preprocess(Image.fromarray(im).convert("RGB")) for im in images])


def digits_tensors(split: str, preprocess) -> tuple[torch.Tensor, torch.Tensor]:
    from ...data.digits import digits_arrays

    images, labels = digits_arrays(split)
    return images_tensor(images, preprocess), torch.as_tensor(labels)


@torch.no_grad()
def text_head(model, tokenizer, class_names=DIGIT_NAMES, templates=(MNIST_TEMPLATE,)) -> torch.Tensor:
    """Zero-shot head: (C, D) unit rows, template-averaged text embeddings."""
    model.eval()
    device = next(model.parameters()).device
    rows = []
    for name in class_names:
        tokens = tokenizer([t.format(name) for t in templates]).to(device)
        emb = F.normalize(model.encode_text(tokens), dim=-1)
        rows.append(F.normalize(emb.mean(0), dim=-1))
    return torch.stack(rows)


@torch.no_grad()
def encode(model, x: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """Image embeddings before normalisation: (N, D)."""
    model.eval()
    return torch.cat([model.encode_image(x[i:i + batch]) for i in range(0, len(x), batch)])


def accuracy(feats: torch.Tensor, head: torch.Tensor, y: torch.Tensor) -> float:
    return float(((F.normalize(feats, dim=-1) @ head.T).argmax(1) == y).float().mean())


def quick_finetune(model, head, x, y, steps=150, batch=64, lr=5e-4, wd=0.1, warmup=15, seed=0):
    """Fine-tune a copy of the image encoder (frozen head, AdamW + cosine): returns the tuned model."""
    torch.manual_seed(seed)
    model = copy.deepcopy(model)
    visual = model.visual
    visual.train()
    opt = torch.optim.AdamW(visual.parameters(), lr=lr, weight_decay=wd)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, s / steps))))
    scale = model.logit_scale.exp().detach()
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=g)
        logits = scale * F.normalize(model.encode_image(x[idx]), dim=-1) @ head.T
        loss = F.cross_entropy(logits, y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(visual.parameters(), 1.0)
        opt.step()
        sched.step()
    model.eval()
    return model


def class_means(feats: torch.Tensor, y: torch.Tensor, c: int = 10) -> torch.Tensor:
    return torch.stack([feats[y == k].mean(0) for k in range(c)])


def forget_each_class(pre_tr, ft_tr, y_tr, ft_te, y_te, head, coef=-1.0):
    """Forget each class in turn by steering (gate at the lowest own-class training cosine).

    Returns per-class (forget accuracy, retain accuracy) arrays (10,) and the fine-tuned accuracy.
    """
    kappa = class_means(ft_tr, y_tr) - class_means(pre_tr, y_tr)
    mu_ft = class_means(ft_tr, y_tr)
    base = (F.normalize(ft_te, dim=-1) @ head.T).argmax(1)
    forget, retain = np.zeros(10), np.zeros(10)
    for c in range(10):
        gamma = float(F.cosine_similarity(ft_tr[y_tr == c], mu_ft[c][None]).min()) - 1e-6
        gate = (F.cosine_similarity(ft_te, mu_ft[c][None]) > gamma).float()[:, None]
        pred = (F.normalize(ft_te + gate * coef * kappa[c], dim=-1) @ head.T).argmax(1)
        forget[c] = float((pred[y_te == c] == c).float().mean())
        retain[c] = float((pred[y_te != c] == y_te[y_te != c]).float().mean())
    return forget, retain, float((base == y_te).float().mean())


@torch.no_grad()
def variant_report(models: dict, head: torch.Tensor, preprocess) -> dict:
    """Accuracy of each model on each digits variant's test split; for the typographic ones, also
    the share of images classified as the written (wrong) numeral: ``{variant: {model: {...}}}``."""
    from ...data.builtin import VARIANTS, variant_arrays, written_labels

    out: dict = {}
    for variant in VARIANTS:
        images, labels = variant_arrays(variant, "test")
        x, y = images_tensor(images, preprocess), torch.as_tensor(labels)
        written = written_labels(variant, "test")
        written = None if written is None else torch.as_tensor(written.copy())
        out[variant] = {}
        for name, model in models.items():
            pred = (F.normalize(encode(model, x), dim=-1) @ head.T).argmax(1)
            row = {"accuracy": round(float((pred == y).float().mean()), 4)}
            if written is not None:
                row["reads_the_text"] = round(float((pred == written).float().mean()), 4)
            out[variant][name] = row
    return out


def evaluate(model, tokenizer, *, finetune_steps: int = 150, seed: int = 0, variants: bool = True) -> dict:
    """All figures on the digits test split (fine-tuning on the train split)."""
    pre = preprocess_for(model)
    (x_tr, y_tr), (x_te, y_te) = digits_tensors("train", pre), digits_tensors("test", pre)
    head = text_head(model, tokenizer)
    pre_tr, pre_te = encode(model, x_tr), encode(model, x_te)
    out = {"zero_shot_test": accuracy(pre_te, head, y_te)}
    if finetune_steps > 0:
        t0 = time.perf_counter()
        tuned = quick_finetune(model, head, x_tr, y_tr, steps=finetune_steps, seed=seed)
        out["finetune_seconds"] = time.perf_counter() - t0
        ft_tr, ft_te = encode(tuned, x_tr), encode(tuned, x_te)
        forget, retain, ft_acc = forget_each_class(pre_tr, ft_tr, y_tr, ft_te, y_te, head)
        out.update(finetuned_test=ft_acc, forget_mean=float(forget.mean()), retain_mean=float(retain.mean()),
                   forget_per_class=forget.round(4).tolist())
        if variants:
            out["variants"] = variant_report({"zero_shot": model, "finetuned": tuned}, head, pre)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Check the built-in CLIP on digits (zero-shot, fine-tune, forget).")
    p.add_argument("--weights", default=None, help="safetensors file (default: the shipped weights)")
    p.add_argument("--steps", type=int, default=150, help="quick fine-tuning steps (0: zero-shot only)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    import open_clip

    from . import BUILTIN_MODEL_NAME, register_config, verify_weights, weights_path

    torch.set_num_threads(args.threads)
    register_config()
    if args.weights is None:
        verify_weights()
    model = open_clip.create_model(BUILTIN_MODEL_NAME, pretrained=args.weights or str(weights_path()))
    print(json.dumps(evaluate(model, open_clip.get_tokenizer(BUILTIN_MODEL_NAME), finetune_steps=args.steps),
                     indent=2))


if __name__ == "__main__":
    main()
