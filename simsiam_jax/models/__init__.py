"""SimSiam models: ResNet backbones, MLP heads and the two-view network."""
