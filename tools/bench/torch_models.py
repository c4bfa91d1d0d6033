"""Pure-PyTorch versions of the models `npm run bench` times, for its model rows: the SD 1.5 UNet (CompVis
ldm openaimodel.py / attention.py structure), the KL autoencoder (ldm/modules/diffusionmodules/model.py:
Encoder, Decoder), KAIR's DnCNN, and one LatentDEM deblurring EM step built from them. Written from the
architecture's description for timing only: weights are random, built from the SAME config dicts as the
TypeScript models (run.ts passes them as JSON), and only output shapes are checked.

Activation checkpointing follows ours: UNet ResBlocks when `use_checkpoint`, BasicTransformerBlocks always
(as the original), VAE blocks when the prior enables it (loadPrior does). It only acts when autograd records.

    /usr/bin/python3 tools/bench/torch_models.py < spec.json     # one model row; prints RESULT {json}
"""
import json
import math
import os
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint as _ckpt

SD_LATENT_SCALE = 0.18215


def ckpt(enabled, fn, *args):
    """Recompute `fn` in backward (less memory) when autograd is recording, like our `checkpoint`."""
    if enabled and torch.is_grad_enabled() and any(a.requires_grad for a in args if torch.is_tensor(a)):
        return _ckpt(fn, *args, use_reentrant=False)
    return fn(*args)


# ---------------------------------------------------------------- UNet (openaimodel.py / attention.py)

def timestep_embedding(t, dim, max_period=10000):
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


def gn(ch, eps=1e-5):
    return nn.GroupNorm(32, ch, eps=eps)


class ResBlock(nn.Module):
    def __init__(self, ch, emb_dim, out_ch, use_checkpoint):
        super().__init__()
        self.use_checkpoint = use_checkpoint
        self.in_layers = nn.Sequential(gn(ch), nn.SiLU(), nn.Conv2d(ch, out_ch, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, out_ch))
        self.out_layers = nn.Sequential(gn(out_ch), nn.SiLU(), nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Identity() if ch == out_ch else nn.Conv2d(ch, out_ch, 1)

    def _body(self, x, emb):
        h = self.in_layers(x) + self.emb_layers(emb)[:, :, None, None]
        return self.skip(x) + self.out_layers(h)

    def forward(self, x, emb, context=None):
        return ckpt(self.use_checkpoint, self._body, x, emb)


class CrossAttention(nn.Module):
    def __init__(self, dim, context_dim, heads, dim_head):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.scale = heads, dim_head ** -0.5
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Linear(inner, dim)

    def forward(self, x, context=None):
        ctx = x if context is None else context
        b, h = x.shape[0], self.heads
        split = lambda t: t.reshape(b, t.shape[1], h, -1).transpose(1, 2)   # [b, heads, L, d]
        q, k, v = split(self.to_q(x)), split(self.to_k(ctx)), split(self.to_v(ctx))
        a = torch.softmax(q @ k.transpose(-1, -2) * self.scale, dim=-1) @ v
        return self.to_out(a.transpose(1, 2).reshape(b, x.shape[1], -1))


class GEGLU(nn.Module):
    def __init__(self, dim, out):
        super().__init__()
        self.proj = nn.Linear(dim, out * 2)

    def forward(self, x):
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim, heads, dim_head, context_dim):
        super().__init__()
        self.attn1 = CrossAttention(dim, dim, heads, dim_head)
        self.ff = nn.Sequential(GEGLU(dim, 4 * dim), nn.Linear(4 * dim, dim))
        self.attn2 = CrossAttention(dim, context_dim, heads, dim_head)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def _body(self, x, context):
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x

    def forward(self, x, context):
        return ckpt(True, self._body, x, context)


class SpatialTransformer(nn.Module):
    def __init__(self, ch, heads, dim_head, depth, context_dim):
        super().__init__()
        inner = heads * dim_head
        self.norm = gn(ch, 1e-6)
        self.proj_in = nn.Conv2d(ch, inner, 1)
        self.blocks = nn.ModuleList([BasicTransformerBlock(inner, heads, dim_head, context_dim) for _ in range(depth)])
        self.proj_out = nn.Conv2d(inner, ch, 1)

    def forward(self, x, emb=None, context=None):
        b, c, hh, ww = x.shape
        h = self.proj_in(self.norm(x))
        h = h.flatten(2).transpose(1, 2)            # [b, hw, inner]
        for blk in self.blocks:
            h = blk(h, context)
        h = h.transpose(1, 2).reshape(b, -1, hh, ww)
        return x + self.proj_out(h)


class Downsample(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.op = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x, emb=None, context=None):
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x, emb=None, context=None):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class EmbedSequential(nn.ModuleList):
    def forward(self, x, emb, context):
        for layer in self:
            x = layer(x, emb, context)
        return x


class ConvIn(nn.Conv2d):
    def forward(self, x, emb=None, context=None):
        return super().forward(x)


class UNet(nn.Module):
    """UNetModel for spatial-transformer configs (SD v1): fields as in our UNetConfig / the CompVis yaml."""

    def __init__(self, c):
        super().__init__()
        mc, mult, nrb = c["model_channels"], c["channel_mult"], c["num_res_blocks"]
        attn_res, ctx_dim, depth = set(c["attention_resolutions"]), c["context_dim"], c.get("transformer_depth", 1)
        ckp = bool(c.get("use_checkpoint", False))
        nh, nhc = c.get("num_heads", -1), c.get("num_head_channels", -1)
        self.model_channels = mc
        emb_dim = 4 * mc

        def transformer(ch):
            heads, dim_head = (ch // nhc, nhc) if nh == -1 else (nh, ch // nh)
            if c.get("legacy", False):
                dim_head = ch // nh if nh != -1 else nhc
            return SpatialTransformer(ch, heads, dim_head, depth, ctx_dim)

        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.input_blocks = nn.ModuleList([EmbedSequential([ConvIn(c["in_channels"], mc, 3, padding=1)])])
        chans, ch, ds = [mc], mc, 1
        for level, m in enumerate(mult):
            for _ in range(nrb):
                layers = [ResBlock(ch, emb_dim, m * mc, ckp)]
                ch = m * mc
                if ds in attn_res:
                    layers.append(transformer(ch))
                self.input_blocks.append(EmbedSequential(layers))
                chans.append(ch)
            if level != len(mult) - 1:
                self.input_blocks.append(EmbedSequential([Downsample(ch)]))
                chans.append(ch)
                ds *= 2
        self.middle_block = EmbedSequential([ResBlock(ch, emb_dim, ch, ckp), transformer(ch), ResBlock(ch, emb_dim, ch, ckp)])
        self.output_blocks = nn.ModuleList()
        for level, m in reversed(list(enumerate(mult))):
            for i in range(nrb + 1):
                layers = [ResBlock(ch + chans.pop(), emb_dim, mc * m, ckp)]
                ch = mc * m
                if ds in attn_res:
                    layers.append(transformer(ch))
                if level and i == nrb:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(EmbedSequential(layers))
        self.out = nn.Sequential(gn(ch), nn.SiLU(), nn.Conv2d(mc, c["out_channels"], 3, padding=1))

    def forward(self, x, t, context):
        emb = self.time_embed(timestep_embedding(t, self.model_channels))
        hs, h = [], x
        for blk in self.input_blocks:
            h = blk(h, emb, context)
            hs.append(h)
        h = self.middle_block(h, emb, context)
        for blk in self.output_blocks:
            h = blk(torch.cat([h, hs.pop()], dim=1), emb, context)
        return self.out(h)


# ---------------------------------------------------------------- KL autoencoder (diffusionmodules/model.py)

def vgn(ch):
    return nn.GroupNorm(32, ch, eps=1e-6)


class ResnetBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.ckpt = False
        self.norm1, self.conv1 = vgn(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = vgn(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.nin_shortcut = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def _body(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.nin_shortcut(x) + h

    def forward(self, x):
        return ckpt(self.ckpt, self._body, x)


class AttnBlock(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.ckpt = False
        self.norm = vgn(ch)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(ch, ch, 1) for _ in range(4))

    def _body(self, x):
        b, c, h, w = x.shape
        n = self.norm(x)
        q = self.q(n).flatten(2).transpose(1, 2)     # [b, hw, c]
        k = self.k(n).flatten(2)                     # [b, c, hw]
        v = self.v(n).flatten(2).transpose(1, 2)
        a = torch.softmax(q @ k * c ** -0.5, dim=-1) @ v
        return x + self.proj_out(a.transpose(1, 2).reshape(b, c, h, w))

    def forward(self, x):
        return ckpt(self.ckpt, self._body, x)


class VaeDown(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class VaeUp(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Encoder(nn.Module):
    def __init__(self, dd):
        super().__init__()
        ch, mult, nrb = dd["ch"], dd["ch_mult"], dd["num_res_blocks"]
        res, attn = dd["resolution"], set(dd.get("attn_resolutions", []))
        self.conv_in = nn.Conv2d(dd["in_channels"], ch, 3, padding=1)
        layers, cin = [], ch
        for i, m in enumerate(mult):
            for _ in range(nrb):
                layers.append(ResnetBlock(cin, ch * m))
                cin = ch * m
                if res in attn:
                    layers.append(AttnBlock(cin))
            if i != len(mult) - 1:
                layers.append(VaeDown(cin))
                res //= 2
        self.down = nn.Sequential(*layers)
        self.mid = nn.Sequential(ResnetBlock(cin, cin), AttnBlock(cin), ResnetBlock(cin, cin))
        zc = dd["z_channels"] * (2 if dd.get("double_z", True) else 1)
        self.out = nn.Sequential(vgn(cin), nn.SiLU(), nn.Conv2d(cin, zc, 3, padding=1))

    def forward(self, x):
        return self.out(self.mid(self.down(self.conv_in(x))))


class Decoder(nn.Module):
    def __init__(self, dd):
        super().__init__()
        ch, mult, nrb = dd["ch"], dd["ch_mult"], dd["num_res_blocks"]
        attn = set(dd.get("attn_resolutions", []))
        cin = ch * mult[-1]
        res = dd["resolution"] // 2 ** (len(mult) - 1)
        self.conv_in = nn.Conv2d(dd["z_channels"], cin, 3, padding=1)
        self.mid = nn.Sequential(ResnetBlock(cin, cin), AttnBlock(cin), ResnetBlock(cin, cin))
        layers = []
        for i in reversed(range(len(mult))):
            for _ in range(nrb + 1):
                layers.append(ResnetBlock(cin, ch * mult[i]))
                cin = ch * mult[i]
                if res in attn:
                    layers.append(AttnBlock(cin))
            if i != 0:
                layers.append(VaeUp(cin))
                res *= 2
        self.up = nn.Sequential(*layers)
        self.out = nn.Sequential(vgn(cin), nn.SiLU(), nn.Conv2d(cin, dd["out_ch"], 3, padding=1))

    def forward(self, z):
        return self.out(self.up(self.mid(self.conv_in(z))))


class AutoencoderKL(nn.Module):
    def __init__(self, c):
        super().__init__()
        dd, e = c["ddconfig"], c["embed_dim"]
        self.factor = 2 ** (len(dd["ch_mult"]) - 1)
        self.encoder, self.decoder = Encoder(dd), Decoder(dd)
        self.quant_conv = nn.Conv2d(2 * dd["z_channels"], 2 * e, 1)
        self.post_quant_conv = nn.Conv2d(e, dd["z_channels"], 1)

    def gradient_checkpointing(self):
        for m in self.modules():
            if isinstance(m, (ResnetBlock, AttnBlock)):
                m.ckpt = True
        return self

    def decode_latent(self, z):
        """Diffusion-space latent -> image (decode(z / 0.18215)), as our decodeLatent."""
        return self.decoder(self.post_quant_conv(z / SD_LATENT_SCALE))

    def encode_latent(self, x, generator=None):
        """A posterior sample times 0.18215, as our encodeLatent(x, { sample: true })."""
        mean, logvar = self.quant_conv(self.encoder(x)).chunk(2, dim=1)
        std = torch.exp(0.5 * logvar.clamp(-30, 20))
        return (mean + std * torch.randn(mean.shape, generator=generator)) * SD_LATENT_SCALE


# ---------------------------------------------------------------- DnCNN (KAIR network_dncnn.py)

class DnCNN(nn.Module):
    def __init__(self, c):
        super().__init__()
        nc, bn = c["nc"], c["act_mode"] == "BR"
        layers = [nn.Conv2d(c["in_nc"], nc, 3, padding=1), nn.ReLU()]
        for _ in range(c["nb"] - 2):
            layers.append(nn.Conv2d(nc, nc, 3, padding=1))
            if bn:
                layers.append(nn.BatchNorm2d(nc, eps=1e-4, momentum=0.9))
            layers.append(nn.ReLU())
        layers.append(nn.Conv2d(nc, c["out_nc"], 3, padding=1))
        self.model = nn.Sequential(*layers)
        self.residual, self.normalized = c["residual"], c.get("kernelInput", "map") == "normalized"

    def forward(self, x):
        n = self.model(x)
        return x - n if self.residual else n

    def denoise(self, k, sigma):
        """As our DnCNN.denoise: the input [k (/ sigma), noise map], channel 0 of the output."""
        n, _, h, w = k.shape
        x = k / sigma if self.normalized else k
        m = torch.full((n, 1, h, w), math.log(sigma * h * w) if self.normalized else sigma)
        z = self.forward(torch.cat([x, m], dim=1))
        z = z[:, :1] if self.residual else z
        return z * sigma if self.normalized else z


# ---------------------------------------------------------------- one LatentDEM EM step (deblur.ts psld)

def p2o(k, hw):
    """psf2otf: kernel zero-padded to H x W, rolled by -floor(ks/2), FFT."""
    ks = k.shape[-1]
    full = F.pad(k, (0, hw[1] - ks, 0, hw[0] - ks))
    return torch.fft.fft2(torch.roll(full, (-(ks // 2), -(ks // 2)), (-2, -1)))


def project(k):
    p = k.clamp(min=0)
    return p / p.sum().clamp(min=1e-30)


def estimate_kernel(x, y, init, net, ks, iterations, lam, beta, sigma):
    """The HQS M-step (hqs.ts estimateKernel, channels 'mean', DnCNN prior) on x, y [C, H, W]."""
    c, hh, ww = x.shape
    alpha = sigma * sigma * beta
    X, Y = torch.fft.fft2(x), torch.fft.fft2(y)
    den = X.real ** 2 + X.imag ** 2 + alpha
    a = (X.conj() * Y / den).sum(0) / c
    b = (alpha / den).sum(0) / c
    z, prior_sigma = project(init), math.sqrt(lam / beta)
    for _ in range(iterations):
        kfull = torch.fft.ifft2(a + b * p2o(z, (hh, ww))).real
        k = project(torch.roll(kfull, (ks // 2, ks // 2), (-2, -1))[:ks, :ks])
        d = net.denoise(k[None, None], prior_sigma).clamp(min=0)
        z = project((d / d.sum().clamp(min=1e-30))[0, 0])
    return z


def recenter(k):
    """recenterKernelTensor: shift to the centre of mass by bilinear tent matrices."""
    h, w = k.shape
    tot = k.sum().clamp(min=1e-30)
    dy = h // 2 - (k * torch.arange(h, dtype=k.dtype)[:, None]).sum() / tot
    dx = w // 2 - (k * torch.arange(w, dtype=k.dtype)[None]).sum() / tot
    tent = lambda n, d: (1 - ((torch.arange(n)[:, None] - torch.arange(n)[None]).float() - d).abs()).clamp(min=0)
    s = (tent(h, dy) @ k @ tent(w, dx).T).clamp(min=0)
    return s / s.sum().clamp(min=1e-30)


def alphas_cumprod():
    """SD's training schedule: scaled-linear betas 0.00085 .. 0.012 over 1000 steps."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0)


def em_step(unet, vae, net, z, y, kernel, context, t, t_prev, gen, o):
    """One full step as em() + deblur()'s psld E-step: UNet eps and Tweedie z0 on z_t's tape, x0 = D(z0), the
    M-step on x0 detached (m-first), the loss with the new kernel (measurement + gluing through the encoder),
    its gradient w.r.t. z_t, and the DDIM update. Returns (z_prev, kernel)."""
    ac = alphas_cumprod()
    a, a_prev = float(ac[t]), float(ac[t_prev]) if t_prev >= 0 else 1.0
    zt = z.detach().requires_grad_(True)
    eps = unet(zt, torch.tensor([t] * zt.shape[0]), context)
    z0 = (zt - math.sqrt(1 - a) * eps) / math.sqrt(a)
    x0 = vae.decode_latent(z0)
    with torch.no_grad():
        z_prev = math.sqrt(a_prev) * z0 + math.sqrt(1 - a_prev) * eps          # DDIM, eta 0
        kernel = recenter(estimate_kernel(x0.detach()[0], y[0], kernel, net, o["ks"], o["iterations"], o["lambda"], o["beta"], o["sigma"]))
        otf = p2o(kernel, y.shape[-2:])
    ax0 = torch.fft.ifft2(torch.fft.fft2(x0) * otf).real
    meas = (ax0 + o["sigma"] * torch.randn(ax0.shape, generator=gen) - y).square().sum().sqrt()
    gluing = (vae.encode_latent(y + x0 - ax0, gen) - z0).square().sum().sqrt()
    loss = (meas * o["omega"] + gluing * o["gamma"]) * o["anneal"]
    (g,) = torch.autograd.grad(loss, zt)
    return (z_prev - o["step_size"] * g).detach(), kernel


# ---------------------------------------------------------------- the bench rows

def vm_hwm_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


def reset_hwm():
    """Restart VmHWM from the current RSS (Linux clear_refs 5), so the peak is the timed region's."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def randomize(m, gen):
    """Random weights on the fixtures' scheme (N(0, 1/fan_in), biases 0.1 N, norm weights 1 + 0.1 N)."""
    with torch.no_grad():
        for name, p in m.named_parameters():
            n = torch.randn(p.shape, generator=gen)
            if name.endswith("bias"):
                p.copy_(0.1 * n)
            elif p.dim() >= 2:
                p.copy_(n / math.sqrt(p[0].numel()))
            else:
                p.copy_(1 + 0.1 * n)
    return m.eval().requires_grad_(False)


PARAMS = [0]


def randomized(m, gen):
    PARAMS[0] += sum(p.numel() for p in m.parameters())
    return randomize(m, gen)


def build_row(row, gen):
    """(run, want): `run()` does one timed iteration; `want` is its output shape, asserted after the warm-up."""
    kind, c = row["kind"], row["config"]
    if kind in ("unet", "unet_bwd"):
        unet = randomized(UNet(c["unet"]), gen)
        b, lat, ctx_len = row["batch"], row["latent"], row["context_len"]
        x = torch.randn(b, c["unet"]["in_channels"], lat, lat, generator=gen)
        ctx = torch.randn(b, ctx_len, c["unet"]["context_dim"], generator=gen)
        t = torch.tensor([row["t"]] * b)
        want = [b, c["unet"]["out_channels"], lat, lat]
        if kind == "unet":
            def run():
                with torch.no_grad():
                    return unet(x, t, ctx)
            return run, want

        def run_bwd():
            xg = x.clone().requires_grad_(True)
            unet(xg, t, ctx).sum().backward()
            return xg.grad
        return run_bwd, want
    if kind == "vae_decode":
        vae = randomized(AutoencoderKL(c["vae"]), gen)
        z = torch.randn(*row["latent_shape"], generator=gen)
        f = vae.factor

        def run():
            with torch.no_grad():
                return vae.decode_latent(z)
        return run, [z.shape[0], c["vae"]["ddconfig"]["out_ch"], z.shape[2] * f, z.shape[3] * f]
    if kind == "dncnn":
        net = randomized(DnCNN(c["dncnn"]), gen)
        x = torch.randn(*row["input_shape"], generator=gen)

        def run():
            with torch.no_grad():
                return net(x)
        # Residual DnCNN returns x - n, n broadcast over the input channels (KAIR; ours the same).
        ch = c["dncnn"]["in_nc"] if c["dncnn"]["residual"] else c["dncnn"]["out_nc"]
        return run, [x.shape[0], ch, x.shape[2], x.shape[3]]
    if kind == "em_step":
        unet = randomized(UNet(c["unet"]), gen)
        vae = randomized(AutoencoderKL(c["vae"]), gen).gradient_checkpointing()
        net = randomized(DnCNN(c["dncnn"]), gen)
        size, ks, lc = row["size"], row["em"]["ks"], c["unet"]["in_channels"]
        lat = size // vae.factor
        ctx = torch.zeros(1, row["context_len"], c["unet"]["context_dim"])
        y = (0.3 * torch.randn(1, 3, size, size, generator=gen)).clamp(-1, 1)
        state = {"z": torch.randn(1, lc, lat, lat, generator=gen), "k": torch.zeros(ks, ks), "i": 0}
        state["k"][ks // 2, ks // 2] = 1

        def run():
            t = 999 - 10 * state["i"]
            state["z"], state["k"] = em_step(unet, vae, net, state["z"], y, state["k"], ctx, t, t - 10, gen, row["em"])
            state["i"] += 1
            return state["z"]
        return run, [1, lc, lat, lat]
    raise ValueError(f"unknown row kind {kind}")


def main():
    spec = json.load(sys.stdin)
    torch.set_num_threads(spec.get("threads", 2))
    gen = torch.Generator().manual_seed(0)
    row = spec["row"]
    t0 = time.perf_counter()
    run, want = build_row(row, gen)
    build_s = time.perf_counter() - t0
    rss_before = vm_hwm_mib()
    reset_ok = reset_hwm()
    out = run()                                     # warm-up
    assert list(out.shape) == want, f"{row['name']}: output {list(out.shape)}, expected {want}"
    ts = []
    for _ in range(spec["runs"]):
        t0 = time.perf_counter()
        run()
        ts.append((time.perf_counter() - t0) * 1000)
    ts.sort()
    res = {
        "name": row["name"], "torch": torch.__version__, "threads": torch.get_num_threads(), "ms": ts,
        "ms_min": ts[0], "ms_median": ts[len(ts) // 2], "build_s": build_s, "output_shape": want, "params": PARAMS[0],
        "peak_rss_mib": vm_hwm_mib() if reset_ok else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_rss_scope": "timed runs (VmHWM reset after building)" if reset_ok else "process lifetime (ru_maxrss)",
        "lifetime_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "build_peak_rss_mib": rss_before,
    }
    print("RESULT " + json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
