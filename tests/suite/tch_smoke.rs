//! libtorch is found and works: a tensor op through tch.

#[test]
fn tch_runs_a_tensor_op() {
    let a = tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
    let b = tch::Tensor::from_slice(&[4.0f32, 5.0, 6.0]);
    let dot = a.dot(&b).double_value(&[]);
    assert_eq!(dot, 32.0);
    let device = tch::Device::cuda_if_available();
    let on_device = (a.to_device(device) * 2).to_device(tch::Device::Cpu);
    assert_eq!(
        Vec::<f32>::try_from(&on_device).unwrap(),
        vec![2.0, 4.0, 6.0]
    );
}
