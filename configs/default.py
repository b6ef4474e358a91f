"""The config schema and this project's defaults: SAM (rho 0.05) on WRN-28-10, CIFAR-10.

Every experiment config starts from this one; any field can be overridden on the
command line, e.g. `--config.sam.rho=0.1 --config.num_epochs=10`. The comments are the
fields' help (`--helpfull`). The official google-research/sam binary's defaults differ
(SGD unless --sam_rho, masks redrawn in the SAM pass, its resize, order and initial
weights): they are `configs/original.py`, which the original flags start from.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  # cifar10, cifar100, svhn, fashion_mnist, digits, imagenet, oxford_flowers102,
  # oxford_iiit_pet, cars196, food101, caltech_birds2011 (sam_jax/data/datasets.py).
  config.dataset = "cifar10"
  config.data_dir = ml_collections.config_dict.placeholder(str)  # TFDS data_dir
  config.use_test_set = True  # False: evaluate on the tail of train (10%; SVHN: train[65929:])
  config.model_name = "WideResnet28x10"  # sam_jax/models: WideResnet28x10, Pyramid_ShakeDrop, ...
  # ViT: dropout after the embeddings, the attention and the MLPs; unset: the model's (0).
  config.dropout_rate = ml_collections.config_dict.placeholder(float)
  # ViT: the head reads the class token ("token") or the mean of the tokens ("gap");
  # unset: the model's (token).
  config.classifier = ml_collections.config_dict.placeholder(str)
  config.head_bias_init = 0.0  # ViT and Mixer: the head's initial bias (-10 with sigmoid loss)
  config.use_additional_skip_connections = False  # WideResNet: AutoAugment's group shortcuts
  # Input side in pixels; unset: the model's resolution (EfficientNet), else the dataset's
  # (224 for the JPEG datasets).
  config.image_size = ml_collections.config_dict.placeholder(int)
  # Computation dtype (parameters, BatchNorm statistics and the loss stay float32):
  # float32 (the original's), bfloat16, or auto: bfloat16 on GPU and TPU, float32 on CPU.
  config.dtype = "float32"
  config.sync_batch_norm = False  # BatchNorm statistics over all replicas (maps them by vmap)
  # How a device runs its virtual replicas' gradient passes: "loop" (unrolled; fastest on
  # CPU), "scan" (one after another: gradient accumulation, one replica's activations in
  # memory at a time, compiled once), "vmap" (batched; grouped convolutions) or "auto":
  # loop on CPU, vmap on GPU and TPU.
  config.replica_mapping = "auto"
  config.num_epochs = 200  # the run's length, unless num_train_steps is set
  config.num_train_steps = ml_collections.config_dict.placeholder(int)  # unset: num_epochs
  config.batch_size = 128  # global batch, all replicas together
  # == Augmentations (sam_jax/data/augmentation.py) ==
  config.image_level_augmentations = "basic"  # none, basic, autoaugment, aa-only, randaugment
  config.batch_level_augmentations = "none"  # none, cutout, mixup, mixcut
  config.cutout_length = 16  # side of the cutout square, pixels
  config.mixup_alpha = 1.0  # mixup weights ~ Beta(alpha, alpha)
  # AutoAugment policy: cifar, svhn or imagenet; unset: the dataset's own.
  config.autoaugment_policy = ml_collections.config_dict.placeholder(str)
  # True: the original's AutoAugment, op for op (250-px translates at every image size);
  # False: magnitudes scaled to the image (data/policies.py). Paper configs: True.
  config.autoaugment_faithful = False
  config.randaug_num_layers = 2  # RandAugment: ops per image (N)
  config.randaug_magnitude = 9  # RandAugment: their magnitude (M)
  config.label_noise = 0.0  # fraction of training labels replaced by another class (Table 4)
  config.label_noise_seed = 0  # which labels, independent of the run's seed
  # True: the redrawn label is uniform over all classes, so it may stay the true one
  # (Zhang et al. 2017, MentorNet's convention); realised rate = label_noise (K - 1) / K.
  config.label_noise_keep_possible = False
  # The training order is a function of the seed and the number of shards the training
  # split is cut into (each process reads its own); unset: one per process, as the
  # original. Set it to another run's process count to see that run's batches.
  config.data_shards = ml_collections.config_dict.placeholder(int)
  config.cutout_mask = "batch"  # one square per batch (the original) or per "example"
  # In-memory datasets: unset, a uniform permutation of the training split every epoch; N,
  # the original's order: the split in file order through a shuffle buffer of N examples
  # (50,000), drawn anew every epoch. Streamed datasets shuffle their files and 16,384.
  config.shuffle_buffer = ml_collections.config_dict.placeholder(int)
  # Resizing to the model's resolution: "bicubic" (tf.image.resize: half-pixel centres,
  # clipped) or "bicubic_tf1" (the original's tf.compat.v1.image.resize_bicubic).
  config.resize_method = "bicubic"
  # Pixels to inputs: "dataset", (x - mean) / std with the dataset's constants, or
  # "minus_one_to_one", [0, 1] mapped to [-1, 1] (the ViT and Mixer recipes').
  config.normalization = "dataset"
  # == Optimizer (sam_jax/optim.py) ==
  # The base optimizer that SAM is in front of: sgd (momentum, the original), rmsprop (TF1
  # RMSProp, decay 0.9, eps 1e-3, then momentum: the EfficientNet recipe), adamw or lion.
  config.optimizer = "sgd"
  config.learning_rate = 0.1  # peak learning rate
  config.use_learning_rate_schedule = True  # False: constant learning_rate
  config.lr_schedule = "cosine"  # cosine, linear, exponential, constant
  config.linear_end = 0.0  # linear: the last learning rate, as a fraction of learning_rate
  config.warmup_epochs = 0.0  # linear warmup from 0, in epochs
  config.warmup_steps = ml_collections.config_dict.placeholder(int)  # set: instead, in steps
  config.momentum = 0.9  # sgd and rmsprop; 0 = none; bSAM has its own (sam.bsam_beta1)
  config.nesterov = True  # sgd: Nesterov momentum (not bSAM's)
  config.adam_beta1 = 0.9  # adamw: decay of the first moment
  config.adam_beta2 = 0.999  # adamw: decay of the second moment
  config.adam_eps = 1e-8  # adamw: added to the second moment's root
  config.lion_beta1 = 0.9  # lion: interpolation of the update's sign
  config.lion_beta2 = 0.99  # lion: decay of the momentum
  config.weight_decay = 0.001  # see weight_decay_type
  # l2: 0.5 wd ||w||^2 in the loss, seen by both SAM passes (the original); decoupled: wd * w
  # added to the base optimizer's direction (SGDW, AdamW), outside SAM; unset: l2 for sgd
  # and rmsprop, decoupled for adamw and lion.
  config.weight_decay_type = ml_collections.config_dict.placeholder(str)
  # No weight decay on parameters with ndim <= 1: BatchNorm's and LayerNorm's scales and
  # biases, every bias.
  config.no_weight_decay_on_bn = False
  # Weight decay only on the parameters named "kernel" (dense and convolution weights; not
  # position embeddings, class token, biases or norms): big_vision's default.
  config.weight_decay_kernels_only = False
  config.gradient_clipping = 5.0  # global norm, after the cross-replica mean; 0 = off
  config.label_smoothing = 0.0  # in [0, 1): targets (1 - s) one-hot + s / K
  # softmax cross-entropy, or sigmoid: a binary cross-entropy per class, summed (big_vision's)
  config.loss = "softmax"
  config.ema_decay = 0.0  # 0 = off; else report an EMA of params and BN statistics
  config.ema_warmup_steps = 1560  # the EMA copies the weights until then (the original's)
  # Finetuning (sam_jax/pretrained/, checkpoints/README.md): a published EfficientNet
  # checkpoint or a folder written by `python -m sam_jax.pretrained`; unset: from scratch.
  # A workdir that already has a checkpoint resumes from it instead.
  config.init_from = ml_collections.config_dict.placeholder(str)
  config.init_from_ema = True  # TF checkpoints: the EMA copies (else the raw variables)
  config.freeze_batch_norm = False  # EfficientNet: normalise with the running statistics
  # == SAM (sam_jax/sam.py) ==
  config.sam = ml_collections.ConfigDict()
  config.sam.rho = 0.05  # the neighbourhood's radius; 0 = the base optimizer (SGD)
  # Examples per perturbation (m-sharpness); unset: one device's batch (the original).
  config.sam.m = ml_collections.config_dict.placeholder(int)
  config.sam.sync_perturbations = False  # one perturbation from g averaged over replicas
  # With sync_perturbations: replicas per shared perturbation (the original's
  # --inner_group_size); None = all of them.
  config.sam.sync_group_size = ml_collections.config_dict.placeholder(int)
  # New dropout/ShakeDrop/stochastic-depth masks in the SAM pass (the original's stateful
  # Bernoulli); shared masks (False) estimate the sharpness gradient with less noise.
  config.sam.redraw_masks = False
  config.sam.adaptive = False  # ASAM
  config.sam.eta = 0.01  # ASAM's offset
  config.sam.p = 2.0  # the norm of the perturbation (paper eq. 2), in [1, inf]
  # The parameters perturbed: "all", or "norm", the normalization layers' scales and biases
  # only (SAM-ON, Mueller et al. 2023, which use a larger rho; sam_jax.normalization_layers).
  config.sam.perturbation_mask = "all"
  # Shake models: ascent gradient with the same gates forward and backward (the original);
  # for SAM, GCSAM and ESAM at every step, where the clean gradient only perturbs.
  config.sam.true_gradient_ascent = True
  # The SAM family (sam_jax/family/): sam (SAM, or ASAM with adaptive), gsam, looksam,
  # esam, gcsam, msam (Momentum-SAM: one pass; the authors use rho 3), wsam, fsam, vasso,
  # functional (Functional-SAM: the Jacobian at w + eps, dL/dlogits at w), sampa (its two
  # gradients on paired replicas at once) or bsam (the whole optimizer).
  config.sam.variant = "sam"
  config.sam.every = 1  # SAM on every k-th step only, plain steps between (Composer's interval)
  config.sam.probability = 1.0  # SAM on a step with this probability (randomized SAM)
  # SAM on the last this fraction of the run's steps only, plain steps before (late-phase
  # SAM, Zhou et al. 2025); 1 = SAM throughout.
  config.sam.late_phase = 1.0
  config.sam.gsam_alpha = 0.01  # GSAM: weight of the clean gradient's part across g_sam
  # GSAM: rho follows the learning rate from rho (at the peak) down to this; unset: constant.
  config.sam.gsam_rho_min = ml_collections.config_dict.placeholder(float)
  config.sam.looksam_every = 5  # LookSAM: the SAM gradient every k steps, reused between
  config.sam.looksam_alpha = 0.7  # LookSAM: weight of the reused orthogonal part
  config.sam.esam_beta = 0.5  # ESAM: probability that a parameter tensor is perturbed
  config.sam.esam_gamma = 0.5  # ESAM: fraction of the examples the SAM pass sees
  config.sam.wsam_gamma = 0.9  # WSAM: weight of sharpness, gamma / (1 - gamma); 0.5 = SAM
  config.sam.wsam_decoupled = True  # WSAM: sharpness as its own plain step (the authors')
  config.sam.fsam_sigma = 1.0  # F-SAM: weight of the gradient EMA taken off g; 0 = SAM
  config.sam.fsam_lambda = 0.6  # F-SAM: decay of that EMA (the authors' CIFAR runs)
  config.sam.vasso_theta = 0.9  # VaSSO: weight of the new gradient in the direction; 1 = SAM
  config.sam.sampa_lambda = 0.2  # SAMPa: weight of the lookahead gradient (the authors' og)
  # bSAM, the whole optimizer (optimizer sgd, weight_decay 0 and gradient_clipping 0), with
  # the authors' CIFAR settings; the run's learning rate schedule scales its steps.
  config.sam.bsam_beta1 = 0.9  # bSAM: decay of its momentum
  config.sam.bsam_beta2 = 0.999  # bSAM: decay of its precision s
  config.sam.bsam_prior_precision = 40.0  # bSAM: the prior; decay prior / N, N as below
  config.sam.bsam_data_factor = 4.0  # bSAM: N = training examples x this (augmentation)
  config.sam.bsam_init_precision = 1.0  # bSAM: s at the start
  config.sam.bsam_damping = 0.1  # bSAM: added to the precision's update
  config.sam.bsam_predictive_samples = 32  # bSAM: posterior samples of the final evaluation
  # == Run ==
  config.seed = 0  # data order, augmentations, dropout and (unless init_seed) parameters
  # The initial parameters' seed; unset: `seed`. The original used 0 whatever its seed.
  config.init_seed = ml_collections.config_dict.placeholder(int)
  config.log_every_steps = 50  # train metrics to TensorBoard and the console
  # > 0: a profile trace of this many steps, 10 steps in (sam_jax/profiling.py)
  config.profile_steps = 0
  config.evaluate_every = 1  # evaluate every this many epochs, and at the end
  config.eval_every_steps = 0  # > 0: every this many steps instead (finetuning)
  config.also_eval_on_training_set = False  # train_eval_* metrics over the training split
  config.compute_top_5_error_rate = False  # also test_top5_error
  # A checkpoint once this long has passed since the last (looked at every log step), and
  # at the end, at SIGTERM and at `additional_checkpoints_at_epochs`.
  config.save_progress_seconds = 3600
  config.keep_checkpoints = 2  # the latest this many checkpoints are kept
  config.additional_checkpoints_at_epochs = ()  # also kept: checkpoints at these epochs
  # A step whose loss or gradient is NaN/Inf: "stop" the run (nothing non-finite is
  # saved), or "skip" its update (counted; for bfloat16 runs that overflow now and then).
  config.nonfinite = "stop"
  return config
