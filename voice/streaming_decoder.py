"""The VITS waveform decoder (HiFi-GAN) run as a stream: latent frames in, samples out, nothing twice.

`VitsHifiGan.forward` decodes a whole latent at once. Decoding it in overlapping windows (the
engine's other way, used on CUDA) recomputes each window's context, about 13 frames on either
side for an MMS voice, which on a CPU costs more than the audio it makes in small chunks. Here
every convolution keeps the tail of its input that it still needs and computes each of its
outputs once, as soon as the inputs it depends on exist; the residual branches and the sum of
the residual blocks wait for their slowest path. Pushing latent frames yields every waveform
sample that no longer depends on frames not yet pushed: all of them once the last frame is in.
The first samples need `lag_frames` frames beyond them (the decoder's reach to the right), but
the costly late layers, which run at 64 to 256 samples per frame, compute hardly more than the
samples asked for, so a first chunk costs about half of the window that gave the same audio.

Coupled to transformers' `VitsHifiGan` and `HifiGanResidualBlock` (pinned in requirements.txt):
the same public submodules (conv_pre, upsampler, resblocks[].convs1 / convs2, conv_post) and
`config.leaky_relu_slope`, applied in the same order with the same operations, so that the joined
output is `forward`'s waveform (tests/voice/test_streaming_engine.py measures how close, on a
tiny and an MMS-sized model). No speaker conditioning: MMS voices have one speaker.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.nn import functional


def _one(value: object) -> int:
    """The single int of a 1-D layer's kernel_size / stride / padding / dilation tuple."""
    if not isinstance(value, tuple) or len(value) != 1 or not isinstance(value[0], int):
        raise ValueError(f"not a 1-D layer setting: {value!r}")
    return value[0]


def _empty_like(reference: torch.Tensor, channels: int) -> torch.Tensor:
    return reference.new_zeros((reference.shape[0], channels, 0))


class _Conv:
    """A stride-1 Conv1d with the same padding on both sides, fed its input piece by piece."""

    def __init__(self, conv: torch.nn.Conv1d, length: int) -> None:
        self.dilation = _one(conv.dilation)
        kernel = _one(conv.kernel_size)
        self.pad = _one(conv.padding)  # on both sides
        if conv.stride != (1,) or 2 * self.pad != self.dilation * (kernel - 1) or conv.padding_mode != "zeros":
            raise ValueError("only stride-1, zero-padded 'same' convolutions stream here")
        self.conv = conv
        self.length = length  # of the input, and of the output
        self.kept: torch.Tensor | None = None  # input from position kept_from to received
        self.kept_from = 0
        self.received = 0
        self.emitted = 0

    def push(self, piece: torch.Tensor) -> torch.Tensor:
        kept = piece if self.kept is None else torch.cat((self.kept, piece), dim=-1)
        self.received += piece.shape[-1]
        end = self.length if self.received >= self.length else max(self.received - self.pad, 0)
        start = self.emitted
        if end <= start:
            self.kept = kept
            return _empty_like(piece, self.conv.out_channels)
        low, high = start - self.pad, end + self.pad  # input positions these outputs read
        segment = kept[..., max(low, 0) - self.kept_from : min(high, self.received) - self.kept_from]
        left, right = max(-low, 0), max(high - self.received, 0)  # zeros, as forward's padding
        if left or right:
            segment = functional.pad(segment, (left, right))
        out = functional.conv1d(
            segment, self.conv.weight, self.conv.bias, dilation=self.dilation, groups=self.conv.groups
        )
        self.emitted = end
        keep_from = max(end - self.pad, 0)
        self.kept = kept[..., keep_from - self.kept_from :]
        self.kept_from = keep_from
        return out


class _ConvTranspose:
    """A ConvTranspose1d (the upsampling layers) fed its input piece by piece."""

    def __init__(self, conv: torch.nn.ConvTranspose1d, length: int) -> None:
        self.stride = _one(conv.stride)
        self.kernel = _one(conv.kernel_size)
        self.pad = _one(conv.padding)
        if conv.dilation != (1,) or conv.output_padding != (0,) or self.kernel < self.stride:
            raise ValueError("only plain upsampling transposed convolutions stream here")
        self.conv = conv
        self.length_in = length
        self.length = (length - 1) * self.stride - 2 * self.pad + self.kernel
        self.kept: torch.Tensor | None = None
        self.kept_from = 0
        self.received = 0
        self.emitted = 0

    def _first_input(self, position: int) -> int:
        """The first input position that contributes to output `position`."""
        return max((position + self.pad - self.kernel) // self.stride + 1, 0)

    def push(self, piece: torch.Tensor) -> torch.Tensor:
        kept = piece if self.kept is None else torch.cat((self.kept, piece), dim=-1)
        self.received += piece.shape[-1]
        if self.received >= self.length_in:
            end = self.length
        else:
            end = min(max(self.received * self.stride - self.pad, 0), self.length)
        start = self.emitted
        if end <= start:
            self.kept = kept
            return _empty_like(piece, self.conv.out_channels)
        first = self._first_input(start)
        last = min(self.received, (end - 1 + self.pad) // self.stride + 1)
        full = functional.conv_transpose1d(
            kept[..., first - self.kept_from : last - self.kept_from],
            self.conv.weight,
            self.conv.bias,
            stride=self.stride,
            groups=self.conv.groups,
        )
        base = first * self.stride - self.pad  # the output position of full[..., 0]
        out = full[..., start - base : end - base]
        self.emitted = end
        keep_from = self._first_input(end)
        self.kept = kept[..., keep_from - self.kept_from :]
        self.kept_from = keep_from
        return out


class _ResidualBlock:
    """HifiGanResidualBlock: per dilation, x + conv2(lrelu(conv1(lrelu(x)))), the x waiting for its branch."""

    def __init__(self, block: Any, length: int) -> None:
        self.slope = float(block.leaky_relu_slope)
        self.pairs = [(_Conv(c1, length), _Conv(c2, length)) for c1, c2 in zip(block.convs1, block.convs2, strict=True)]
        self.waiting: list[torch.Tensor | None] = [None] * len(self.pairs)

    @property
    def lag(self) -> int:
        return sum(c1.pad + c2.pad for c1, c2 in self.pairs)

    def push(self, hidden: torch.Tensor) -> torch.Tensor:
        for number, (conv1, conv2) in enumerate(self.pairs):
            previous = self.waiting[number]
            residual = hidden if previous is None else torch.cat((previous, hidden), dim=-1)
            branch = functional.leaky_relu(hidden, self.slope)
            branch = functional.leaky_relu(conv1.push(branch), self.slope)
            branch = conv2.push(branch)
            done = branch.shape[-1]
            hidden = branch + residual[..., :done]
            self.waiting[number] = residual[..., done:]
        return hidden


class _Level:
    """One upsampling step: lrelu, the transposed convolution, then the mean of its residual blocks."""

    def __init__(self, upsampler: Any, blocks: list[Any], length: int, slope: float) -> None:
        self.slope = slope
        self.upsample = _ConvTranspose(upsampler, length)
        self.length = self.upsample.length
        self.blocks = [_ResidualBlock(block, self.length) for block in blocks]
        self.waiting: list[torch.Tensor | None] = [None] * len(self.blocks)

    @property
    def lag(self) -> int:
        return self.upsample.pad + max(block.lag for block in self.blocks)

    def push(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = self.upsample.push(functional.leaky_relu(hidden, self.slope))
        outputs = []
        for number, block in enumerate(self.blocks):
            previous = self.waiting[number]
            produced = block.push(hidden)
            outputs.append(produced if previous is None else torch.cat((previous, produced), dim=-1))
        done = min(output.shape[-1] for output in outputs)
        total = outputs[0][..., :done]
        for output in outputs[1:]:
            total = total + output[..., :done]
        self.waiting = [output[..., done:] for output in outputs]
        return total / len(self.blocks)


class StreamingHifiGan:
    """Decode one latent of `frames` frames as it is pushed; `push` returns the samples now final."""

    def __init__(self, decoder: Any, frames: int) -> None:
        config = decoder.config
        if getattr(config, "speaker_embedding_size", 0):
            raise ValueError("speaker-conditioned decoders are not streamed")
        self.frames = frames
        self.pre = _Conv(decoder.conv_pre, frames)
        kernels = len(config.resblock_kernel_sizes)
        slope = float(config.leaky_relu_slope)
        self.levels: list[_Level] = []
        length = frames
        for number, upsampler in enumerate(decoder.upsampler):
            blocks = list(decoder.resblocks[number * kernels : (number + 1) * kernels])
            level = _Level(upsampler, blocks, length, slope)
            self.levels.append(level)
            length = level.length
        self.post = _Conv(decoder.conv_post, length)
        self.samples = length
        self.pushed = 0

    @property
    def hop(self) -> int:
        """Waveform samples per latent frame."""
        return math.prod(level.upsample.stride for level in self.levels)

    @property
    def lag_frames(self) -> int:
        """Latent frames that must be pushed beyond a frame before its samples are all final."""
        samples, scale = self.post.pad, 1
        for level in reversed(self.levels):
            samples += level.lag * scale
            scale *= level.upsample.stride
        samples += self.pre.pad * scale
        return -(-samples // self.hop)

    def push(self, latents: torch.Tensor) -> torch.Tensor:
        """Feed the next latent frames (batch 1, channels, n); returns the new final samples (1-D)."""
        self.pushed += latents.shape[-1]
        if self.pushed > self.frames:
            raise ValueError("more latent frames pushed than the decoder was made for")
        hidden = self.pre.push(latents)
        for level in self.levels:
            hidden = level.push(hidden)
        hidden = functional.leaky_relu(hidden)  # forward's default slope here, not the config's
        waveform: torch.Tensor = torch.tanh(self.post.push(hidden))
        return waveform[0, 0]


__all__ = ["StreamingHifiGan"]
