"""Training and evaluation of face-recognition models on morphgen data and real data.

Modules (flat, one job each):

- ``data``: ImageSet readers (morphgen dataset folders, folder-per-identity trees,
  insightface RecordIO via ``recordio``), subsets and list files, MTCNN landmark cache,
  FaceDataset (aligned crops, augmentation, soft labels), P x K batch sampler.
- ``align``: Umeyama 5-point similarity onto the OpenFace 96 px or ArcFace 112 px template.
- ``detect``: MTCNN (P/R/O-Net) on facenet-pytorch's shipped weights, without torchvision.
- ``models``: NN4.small2, facenet-pytorch InceptionResnetV1, IResNet-18/50.
- ``losses``: semi-hard triplet loss, ArcFace/CosFace head with soft labels, domain mixup.
- ``train``: ``TrainConfig`` and ``train()`` (checkpoints, resume, CSV/TensorBoard, DDP).
- ``embed``: ``embed()`` embeddings of any image folder; ``verify``: pairs, accuracy, AUC.
"""
