"""SimSiam models: ResNet backbones, MLP heads and the two-view network.

  resnet.py   ResNet-18..152 (torchvision's), cifar stem, the convolution module
  heads.py    projector and predictor MLPs with SimSiam's BN placement
  simsiam.py  the two-view network and `create_model(config.model)`
"""
