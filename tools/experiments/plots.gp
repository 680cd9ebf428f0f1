# tools/experiments/plots.gp — the figures of docs/experiments.md from the CSVs in `dir`.
#   gnuplot -e "dir='docs/figures'" tools/experiments/plots.gp
if (!exists("dir")) dir = "docs/figures"
set datafile separator ","
set datafile missing "nan"
set key autotitle columnhead
set grid lc rgb "#dddddd"
set style line 1 lc rgb "#d62728" lw 2          # linear attention
set style line 2 lc rgb "#1f77b4" lw 2          # deltanet
set style line 3 lc rgb "#2ca02c" lw 2          # vla
set style line 4 lc rgb "#2ca02c" lw 2 dt 2     # vla variant
set style line 5 lc rgb "#9467bd" lw 2 dt 3     # vla variant 2
set style line 6 lc rgb "#ff7f0e" lw 2
set style line 7 lc rgb "#8c564b" lw 2
set style line 8 lc rgb "#e377c2" lw 2
set style line 9 lc rgb "#7f7f7f" lw 2
# the seven adversarial streams / four Jacobian settings
set style line 11 lc rgb "#2ca02c" lw 2
set style line 12 lc rgb "#17becf" lw 2 dt 2
set style line 13 lc rgb "#9467bd" lw 2
set style line 14 lc rgb "#ff7f0e" lw 2
set style line 15 lc rgb "#8c564b" lw 2
set style line 16 lc rgb "#e377c2" lw 2
set style line 17 lc rgb "#7f7f7f" lw 2
sel(col, val, y) = (strcol(col) eq val) ? y : NaN
sel2(c1, v1, c2, v2, y) = (strcol(c1) eq v1 && strcol(c2) eq v2) ? y : NaN

# ---- Figure 1 (main): state norm ------------------------------------------------------------
set terminal pngcairo size 1100,440 font "DejaVu Sans,9"
set output dir."/state_norm.png"
set multiplot layout 1,2 title "‖S_t‖_F: linear attention grows without bound; VLA and DeltaNet stay bounded"
f = dir."/state_norm_model.csv"
set logscale xy
set format y "10^{%L}"
set format x "10^{%L}"
set xlabel "t (tokens)"
set ylabel "‖S_t‖_F (mean over 2 layers × 4 heads; band: min–max over 10 seeds)"
set title "2-layer random-init model, d_{model} 128, 4 heads × 32"
set key top left noautotitle
set arrow 1 from 1000, graph 0 to 1000, graph 1 nohead dt 3 lc rgb "#555555"
set label 1 "T = 1,000" at 1100, graph 0.05 tc rgb "#555555"
plot \
  f using 3:(sel2(1,"linear_attention",2,"all",$6)):(sel2(1,"linear_attention",2,"all",$7)) with filledcurves lc rgb "#d62728" fs transparent solid 0.2 noborder notitle, \
  f using 3:(sel2(1,"deltanet",2,"all",$6)):(sel2(1,"deltanet",2,"all",$7)) with filledcurves lc rgb "#1f77b4" fs transparent solid 0.2 noborder notitle, \
  f using 3:(sel2(1,"vla",2,"all",$6)):(sel2(1,"vla",2,"all",$7)) with filledcurves lc rgb "#2ca02c" fs transparent solid 0.2 noborder notitle, \
  f using 3:(sel2(1,"linear_attention",2,"all",$4)) with lines ls 1 title "linear attention", \
  f using 3:(sel2(1,"deltanet",2,"all",$4)) with lines ls 2 title "DeltaNet", \
  f using 3:(sel2(1,"vla",2,"all",$4)) with lines ls 3 title "VLA (u = k)", \
  f using 3:(sel2(1,"vla_uproj",2,"all",$4)) with lines ls 4 title "VLA (u projected)"
unset arrow 1
unset label 1
f = dir."/state_norm_long.csv"
set title "one head, T up to 10^6 (5 seeds; band: min–max)"
set ylabel "‖S_t‖_F"
plot \
  f using 2:(sel(1,"linear_attention",$5)):(sel(1,"linear_attention",$6)) with filledcurves lc rgb "#d62728" fs transparent solid 0.2 noborder notitle, \
  f using 2:(sel(1,"vla",$5)):(sel(1,"vla",$6)) with filledcurves lc rgb "#2ca02c" fs transparent solid 0.2 noborder notitle, \
  f using 2:(sel(1,"linear_attention",$3)) with lines ls 1 title "linear attention", \
  f using 2:(sel(1,"deltanet",$3)) with lines ls 2 title "DeltaNet", \
  f using 2:(sel(1,"vla",$3)) with lines ls 3 title "VLA", \
  f using 2:(sel(1,"vla_float32",$3)) with lines ls 5 title "VLA float32", \
  f using 2:(sel(1,"vla_no_refresh",$3)) with lines ls 4 title "VLA, refresh off"
unset multiplot

# ---- Figure 2: adversarial streams -----------------------------------------------------------
set terminal pngcairo size 1000,1060 font "DejaVu Sans,9"
set output dir."/adversarial.png"
f = dir."/adversarial.csv"
set multiplot layout 4,2 title "docs/maths.md §6 adversarial streams (d_k = 32, seed 0, float64; last row: float32 against float64)"
set key autotitle columnhead
set logscale x
set format x "10^{%L}"
set xlabel "t"
stats f using 3 nooutput
set xrange [1:STATS_max]
array streams[7] = ["random_u_eq_k", "random_u_indep", "aligned_span", "repeated_key", "u_subspace", "value_drift", "outliers"]
do for [ref in "on off"] {
  set title "refresh ".ref
  set logscale y
  set format y "10^{%L}"
  set ylabel "‖S_t‖_F"
  if (ref eq "on") { set key top left font ",8" } else { unset key }
  plot for [i=1:7] f using 3:(sel2(1,streams[i],2,ref,$4)) with lines ls (i+10) title streams[i] noenhanced
}
do for [ref in "on off"] {
  set title "refresh ".ref
  set ylabel "cond(A_t) (exact)"
  unset key
  plot for [i=1:7] f using 3:(sel2(1,streams[i],2,ref,$5)) with lines ls (i+10) title streams[i] noenhanced
}
do for [ref in "on off"] {
  set title "refresh ".ref
  unset logscale y
  set format y "%g"
  set ylabel "‖J_t‖₂ at the checkpoints"
  set yrange [0.98:1.62]
  plot for [i=1:7] f using 3:(sel2(1,streams[i],2,ref,$6)) with points ls (i+10) pt 7 ps 0.4 title streams[i] noenhanced, \
       1.6180339887 with lines dt 2 lc rgb "#555555" title "φ"
  set autoscale y
}
do for [ref in "on off"] {
  set title "refresh ".ref
  set logscale y
  set format y "10^{%L}"
  set ylabel "‖S_{f32} − S_{f64}‖_F / ‖S_{f64}‖_F"
  plot for [i=1:7] f using 3:(sel2(1,streams[i],2,ref,$9)) with lines ls (i+10) title streams[i] noenhanced
}
unset multiplot
unset logscale
set autoscale x

# ---- Figure 3: the Jacobian ------------------------------------------------------------------
set terminal pngcairo size 1100,440 font "DejaVu Sans,9"
set output dir."/jacobian.png"
set multiplot layout 1,2 title "Recurrence Jacobian J_t = I − k̂α̂^T: the paper says ‖J_t‖₂ = 1 at every step"
array settings[4] = ["paper_head", "u_indep", "u_subspace", "aligned_span"]
f = dir."/jacobian_hist.csv"
set title "distribution of ‖J_t‖₂ − 1 (10^4 steps × 5 seeds)"
set xlabel "log_{10}(‖J_t‖₂ − 1)   (‖J‖₂ = 1 would be −∞)"
set ylabel "density per decade"
set format x "%g"
set format y "%g"
set key top left
plot for [i=1:4] f using 2:(sel(1,settings[i],$3)) with steps ls (i+10) title settings[i] noenhanced
f = dir."/jacobian_windows.csv"
set title "‖J_{t+1}···J_{t+W}‖₂ over windows (per seed: median, bar = min–max)"
set xlabel "window W (steps)"
set ylabel "2-norm of the product"
set logscale xy
set format x "10^{%L}"
set format y "10^{%L}"
set xrange [5:2000]
set key bottom left
off(i) = 10**(0.06 * (i - 2.5))
plot for [i=1:4] f using ($2*off(i)):(sel(1,settings[i],10**$6)):(sel(1,settings[i],10**$4)):(sel(1,settings[i],10**$8)) \
       with yerrorbars ls (i+10) pt 7 ps 0.6 title settings[i] noenhanced, \
     1 with lines dt 2 lc rgb "#555555" title "‖J‖ = 1 per step would give ≤ 1"
unset multiplot
unset logscale
set autoscale x

# ---- Figure 4: recall ------------------------------------------------------------------------
set terminal pngcairo size 1000,600 font "DejaVu Sans,9"
set output dir."/recall.png"
f = dir."/recall.csv"
set multiplot layout 2,3 title "Training-free associative recall: exact match vs load n/d (10 seeds, bars ± sd)"
array keys[3] = ["random", "correlated", "elu_plus_one"]
array mems[4] = ["linear_attention", "deltanet", "vla_u_eq_k", "vla_u_random"]
array mls[4] = [1, 2, 3, 5]
set xrange [0:2.1]
set yrange [0:105]
set format x "%g"
set format y "%g"
set xlabel "n / d"
set ylabel "exact match (%)"
do for [d in "32 64"] {
  do for [k=1:3] {
    set title "d = ".d.", keys: ".keys[k] noenhanced
    if (d eq "32" && k == 1) { set key bottom left font ",8" } else { unset key }
    plot for [m=1:4] f using 5:(strcol(1) eq d && strcol(2) eq keys[k] && strcol(3) eq mems[m] ? $6 : NaN):7 \
           with yerrorlines ls mls[m] pt 7 ps 0.5 title mems[m] noenhanced
  }
}
unset multiplot
