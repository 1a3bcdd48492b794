"""Training and evaluation of face-recognition models on morphgen data and real data.

Modules (flat, one job each):

- ``data``: ImageSet readers (morphgen dataset folders in :mod:`morphgen.layout`,
  folder-per-identity trees, insightface RecordIO via ``recordio``), subsets and list
  files, FaceDataset (aligned crops, augmentation, soft labels), P x K batch sampler.
- ``landmarks``: MTCNN five points of images that have none, with their cache;
  ``detect``: MTCNN (P/R/O-Net) on facenet-pytorch's shipped weights, without torchvision;
  ``align``: Umeyama 5-point similarity onto the OpenFace 96 px or ArcFace 112 px template.
- ``models``: NN4.small2, facenet-pytorch InceptionResnetV1, IResNet-18/50.
- ``losses``: semi-hard triplet loss, ArcFace/CosFace head with soft labels, domain mixup.
- ``train_config``: ``TrainConfig`` (options, defaults, checks); ``train``: ``train()``
  (checkpoints, resume, CSV/TensorBoard, DDP); ``online``: batches rendered on the fly.
- ``embed``: ``embed()`` embeddings of any image folder; ``verify``: pairs, accuracy, AUC.
- ``evaluation``: benchmark protocols (``protocols`` is their registry).
- ``experiment_config`` and ``experiment``: paper-style experiments (config, runner).
"""
