"""onestep_jax: one-step and few-step diffusion generators in JAX/Flax."""
from setuptools import find_packages, setup

setup(
    name='onestep_jax',
    version='0.1.0',
    description='Distil many-step diffusion models into one-step generators, in JAX/Flax.',
    packages=find_packages(include=['onestep_jax', 'onestep_jax.*']),
    package_data={'onestep_jax': ['assets/*/*']},
    python_requires='>=3.10',
    install_requires=[
        'jax>=0.10.2',
        # ml_dtypes 0.7.0 (jax's dependency) takes 0.5 s to import, 0.05 s for 0.6.0: jax's import
        # 0.84-0.89 s against 0.36-0.40 s, in every process (benchmarks/import_time.py).
        'ml_dtypes>=0.5,!=0.7.0',
        'flax>=0.12',
        'optax>=0.2.8',
        'orbax-checkpoint>=0.12',
        'ml-collections>=1.0',
        'chex>=0.1.90',
        'numpy>=1.26',
        'scipy>=1.11',
        'scikit-learn>=1.4',
        'matplotlib>=3.8',
        'pillow>=10',
        'tqdm>=4.66',
        'safetensors>=0.4',
    ],
    extras_require={
        'data': ['tensorflow-datasets>=4.9.8', 'grain>=0.2.10', 'array-record>=0.8'],
        'convert': ['torch>=2.0'],
        # Tokenizer files (tokenizer.json) of imported language models: data/hf_tokenizer.py.
        'text': ['tokenizers>=0.19'],
        'test': ['pytest>=8', 'pytest-xdist>=3.5', 'tensorflow-datasets>=4.9.8', 'grain>=0.2.10',
                 'array-record>=0.8', 'tokenizers>=0.19'],
        # TensorBoard event files beside metrics.jsonl (clu's SummaryWriter needs TensorFlow).
        'tensorboard': ['clu>=0.0.12', 'tensorflow>=2.16', 'tensorboard>=2.16'],
    },
)
