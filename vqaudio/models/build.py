"""One builder per model kind, from its recipe section: the only place recipes meet modules.

The modules themselves take plain arguments. `build_model` makes any kind from a checkpoint's
typed record and loads its weights, for inference and for the tasks that train on another
model's codes alike.
"""

from __future__ import annotations

from torch import nn

from vqaudio.errors import VQAudioError
from vqaudio.formats.checkpoint import Checkpoint
from vqaudio.formats.metadata import (
    AudioVQVAEMetadata,
    CodePriorMetadata,
    ImagePriorMetadata,
)
from vqaudio.models import mixture
from vqaudio.models.adversarial import Critic
from vqaudio.models.audio_vqvae import AudioVQVAE
from vqaudio.models.code_prior import CodePrior
from vqaudio.models.conv_decoder import ConvDecoder, default_strides
from vqaudio.models.discriminators import (
    Discriminators,
    MultiPeriodDiscriminator,
    MultiScaleSTFTDiscriminator,
)
from vqaudio.models.encoder import AudioEncoder
from vqaudio.models.factorized import FactorizedQuantizer
from vqaudio.models.fsq import FiniteScalarQuantizer
from vqaudio.models.image_vae import ImageVAE
from vqaudio.models.image_vqvae import ImageVQVAE
from vqaudio.models.image_vqvae2 import ImageVQVAE2
from vqaudio.models.pixelcnn import GatedPixelCNN, PixelCNNPrior
from vqaudio.models.pruning import PruningSchedule
from vqaudio.models.quantizer import VectorQuantizer
from vqaudio.models.residual_quantizer import ResidualVectorQuantizer
from vqaudio.models.spectral_loss import SpectralLoss
from vqaudio.models.top_level import TopLevel
from vqaudio.models.wavenet import WaveNet
from vqaudio.recipe import (
    AudioModelConfig,
    AudioRecipe,
    CodePriorRecipe,
    DecoderConfig,
    ImageModelConfig,
    ImagePriorRecipe,
    ImageRecipe,
    PixelCNNPriorConfig,
    QuantizerConfig,
    TrainConfig,
    WaveNetPriorConfig,
)


def _quantizer_options(vq: QuantizerConfig) -> dict:
    return dict(
        beta=vq.beta, update=vq.update, decay=vq.decay, epsilon=vq.epsilon, init=vq.init, init_batches=vq.init_batches,
        kmeans_iters=vq.kmeans_iters, restart_threshold=vq.restart_threshold, usage_decay=vq.usage_decay,
        bias_correction=vq.bias_correction, cosine=vq.cosine,
    )  # fmt: skip


def build_quantizer(vq: QuantizerConfig, codebook_size: int, dim: int, plain: bool = False) -> ResidualVectorQuantizer:
    """`vq.n_q` quantisers of `codebook_size` codes for latents of dimension `dim` on successive
    residuals: codebooks (`kind: vq`, factorised with `code_dim`) or FSQ grids (`kind: fsq`).
    `plain`: a codebook whatever the kind (a two-level model's top level)."""
    if vq.kind == "fsq" and not plain:
        assert vq.levels is not None
        levels = vq.levels
        return ResidualVectorQuantizer(n_q=vq.n_q, dropout=vq.dropout, make_level=lambda: FiniteScalarQuantizer(levels, dim))
    if vq.code_dim is not None and not plain:
        options = {**_quantizer_options(vq), "cosine": True}
        code_dim = vq.code_dim

        def factorised() -> FactorizedQuantizer:
            return FactorizedQuantizer(VectorQuantizer(codebook_size=codebook_size, dim=code_dim, **options), dim)

        return ResidualVectorQuantizer(n_q=vq.n_q, dropout=vq.dropout, make_level=factorised)
    return ResidualVectorQuantizer(n_q=vq.n_q, dropout=vq.dropout, codebook_size=codebook_size, dim=dim, **_quantizer_options(vq))


def build_audio_vqvae(config: AudioModelConfig, num_speakers: int, spectral_loss: SpectralLoss | None = None) -> AudioVQVAE:
    """The audio VQ-VAE of `model.kind: audio_vqvae` (two levels with `model.top`); a conv
    decoder trains on `spectral_loss` (see `build_spectral_loss`)."""
    enc, vq, dec, top = config.encoder, config.quantizer, config.decoder, config.top
    # Modules are made in this order so that a seed gives the weights it always gave.
    encoder = AudioEncoder(enc.channels, vq.dim, enc.downsample_layers, enc.kernel_size, enc.residual_layers)
    quantizer = build_quantizer(vq, vq.codebook_size, vq.dim)
    top_level = None
    if top is not None:
        top_quantizer = build_quantizer(vq.model_copy(update={"n_q": 1, "dropout": False}), top.codebook_size, top.dim, plain=True)
        top_level = TopLevel(vq.dim, top_quantizer, top.downsample_layers, top.channels, top.residual_layers)
    speaker_embedding = nn.Embedding(num_speakers, dec.speaker_dim) if dec.speaker_dim else None
    cond_in = vq.dim * (2 if top_level is not None else 1)
    if dec.kind == "conv":
        conv = ConvDecoder(
            cond_in, dec.channels, dec.strides or default_strides(encoder.hop), dec.speaker_dim,
            dec.conv_kernel_size, dec.activation, dec.upsample, dec.min_channels,
        )  # fmt: skip
        return AudioVQVAE(encoder, quantizer, top_level, speaker_embedding, nn.Identity(), conv, spectral_loss)
    # A kernel-3 convolution at the latent rate lets each frame see its neighbours before upsampling.
    cond_net = nn.Sequential(nn.Conv1d(cond_in, dec.cond_channels, 3, padding=1), nn.ReLU())
    decoder = WaveNet(
        num_classes=mixture.LEVELS if dec.output == "mol" else dec.quantization_channels,
        residual_channels=dec.residual_channels,
        gate_channels=dec.gate_channels,
        skip_channels=dec.skip_channels,
        layers=dec.layers,
        stacks=dec.stacks,
        kernel_size=dec.kernel_size,
        cond_channels=dec.cond_channels,
        global_channels=dec.speaker_dim,
        hop=encoder.hop,
        mixtures=dec.mixtures if dec.output == "mol" else 0,
        pruning=pruning_schedule(dec),
    )
    return AudioVQVAE(encoder, quantizer, top_level, speaker_embedding, cond_net, decoder, pre_emphasis=dec.pre_emphasis)


def pruning_schedule(config: DecoderConfig | WaveNetPriorConfig) -> PruningSchedule | None:
    """The WaveNet's block pruning as its recipe section sets it; None when dense."""
    if config.sparsity <= 0:
        return None
    assert config.pruning_end is not None  # the recipe's validator requires it
    block = (int(config.sparsity_block[0]), int(config.sparsity_block[1]))
    return PruningSchedule(config.sparsity, block, config.pruning_start, config.pruning_end, config.pruning_every)


def build_spectral_loss(config: TrainConfig, sample_rate: int) -> SpectralLoss:
    """The conv decoder's reconstruction loss, weighted as `train.loss` says."""
    loss = config.loss
    return SpectralLoss(sample_rate, loss.mel, loss.stft, loss.mel_windows, loss.stft_ffts)


def build_critic(config: TrainConfig) -> Critic:
    """The discriminators of `train.discriminator` with the adversarial losses of `train.loss`."""
    disc, loss = config.discriminator, config.loss
    parts: list[nn.Module] = []
    if disc.periods:
        parts.append(MultiPeriodDiscriminator(disc.periods, disc.period_channels, disc.max_channels))
    if disc.stft_windows:
        parts.append(MultiScaleSTFTDiscriminator(disc.stft_windows, disc.stft_channels))
    return Critic(Discriminators(parts), loss.adversarial_loss, loss.adversarial, loss.feature_matching)


def build_code_prior(
    config: WaveNetPriorConfig, codebook_size: int, n_q: int, num_speakers: int, condition_codes: int = 0, ratio: int = 1
) -> CodePrior:
    """The WaveNet prior of `model.kind: code_prior`; a bottom prior is conditioned on
    `condition_codes` top codes, one per `ratio` frames."""
    return CodePrior(
        codebook_size,
        n_q,
        num_speakers,
        layers=config.layers,
        stacks=config.stacks,
        kernel_size=config.kernel_size,
        residual_channels=config.residual_channels,
        gate_channels=config.gate_channels,
        skip_channels=config.skip_channels,
        speaker_dim=config.speaker_dim,
        condition_codes=condition_codes,
        condition_ratio=ratio,
        condition_blocks=config.condition_blocks,
        pruning=pruning_schedule(config),
    )


def build_image_model(config: ImageModelConfig) -> ImageVQVAE | ImageVAE | ImageVQVAE2:
    """The image VQ-VAE, VQ-VAE-2 or VAE baseline of `model.kind`."""
    net = config.image
    if config.kind == "image_vae":
        return ImageVAE(net.vae_dim, net.hidden, net.residual_blocks)
    q = config.quantizer
    if q.n_q != 1:
        raise VQAudioError(f"model.quantizer.n_q: the {config.kind} uses one codebook per level")
    model = ImageVQVAE2 if config.kind == "image_vqvae2" else ImageVQVAE
    return model(q.codebook_size, q.dim, net.hidden, net.residual_blocks, **_quantizer_options(q))


def build_pixelcnn(config: PixelCNNPriorConfig, codebook_size: int, num_classes: int, conditioned: bool = False, scale: int = 1) -> PixelCNNPrior:
    """The gated PixelCNN of `model.kind: image_prior`; `conditioned`: on top codes at 1/`scale`
    of the map's side (a VQ-VAE-2's bottom prior)."""
    net = GatedPixelCNN(
        codebook_size, config.residual_channels, config.layers, config.kernel_size, num_classes,
        attention_every=config.attention_every, heads=config.heads, dropout=config.dropout,
        condition_codes=codebook_size if conditioned else 0, condition_blocks=config.condition_blocks, condition_scale=scale,
    )  # fmt: skip
    return PixelCNNPrior(net)


def build_model(checkpoint: Checkpoint) -> nn.Module:
    """The model a checkpoint holds, built from its own recipe and metadata, with its weights
    loaded, in eval mode on the CPU."""
    recipe, meta = checkpoint.recipe, checkpoint.metadata
    model: nn.Module
    if isinstance(recipe, AudioRecipe) and isinstance(meta, AudioVQVAEMetadata):
        model = build_audio_vqvae(recipe.model, len(meta.speakers))
    elif isinstance(recipe, CodePriorRecipe) and isinstance(meta, CodePriorMetadata):
        ratio = meta.ratio if meta.condition_codes else 1
        model = build_code_prior(recipe.prior, meta.codebook_size, meta.n_q, len(meta.speakers), meta.condition_codes, ratio)
    elif isinstance(recipe, ImagePriorRecipe) and isinstance(meta, ImagePriorMetadata):
        top = meta.condition_shape
        scale = meta.code_shape[0] // top[0] if top else 1
        model = build_pixelcnn(recipe.prior, meta.codebook_size, len(meta.class_names), top is not None, scale)
    elif isinstance(recipe, ImageRecipe):
        model = build_image_model(recipe.model)
    else:
        raise VQAudioError(f"{checkpoint.path}: its recipe (model.kind {recipe.kind}) does not match its kind {checkpoint.kind!r}")
    try:
        model.load_state_dict(checkpoint.weights)
    except RuntimeError as exc:
        raise VQAudioError(
            f"{checkpoint.path}: weights do not fit the recipe stored with them ({str(exc).splitlines()[0]})"
        ) from None
    if isinstance(model, CodePrior):
        model.mask_start_logit()  # priors trained before the mask existed: changes no probability
    return model.eval()
