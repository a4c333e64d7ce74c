set -x
cd /work/main
run() { # name task rate extra...
  out=out/drcase_$1; mkdir -p $out
  .venv/bin/python -m experiments.bench --mode=accuracy --tasks=$2 --pattern=uniform --size=128 --images=3 --rate=$3 --data_dir=../shared/data/bsds500 --accuracy_methods=mfista,fista_b,douglas_rachford --policy=pretrained --repeats=5 --tta_iters=2000 --out_dir=$out "${@:4}"
}
run fourier_r0.7 fourier 0.7
run inpainting_r0.7 inpainting 0.7
run fourier_noisy fourier 0.5 --noise_sigma=5
run inpainting_noisy inpainting 0.5 --noise_sigma=5
run fourier_lam0.5 fourier 0.5 --lam_multiplier=0.5
run fourier_lam2 fourier 0.5 --lam_multiplier=2
run inpainting_lam0.5 inpainting 0.5 --lam_multiplier=0.5
run inpainting_lam2 inpainting 0.5 --lam_multiplier=2
